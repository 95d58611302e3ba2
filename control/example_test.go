//go:build unix

package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/control"
)

// A service opens its control socket before Ready; from then on the molt
// command, or a Client, can ask it to upgrade, stop, or say how it is.
func ExampleListen() {
	dir, err := os.MkdirTemp("", "svc") // /run/svc in a real service
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	upg, err := molt.New(molt.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	ctl, err := control.Listen(upg, filepath.Join(dir, "control.sock"), control.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer ctl.Close()
	// ... upg.Listen for the service's own sockets ...
	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}

	// What `molt -s /run/svc/control.sock status` asks:
	st, err := (&control.Client{Path: ctl.Path()}).Status(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("generation", st.Generation, st.State)
	fi, _ := os.Stat(ctl.Path())
	fmt.Println("socket mode", fi.Mode().Perm())
	// Output:
	// generation 1 ready
	// socket mode -rw-------
}

// A deploy script's view of an upgrade: the result, or why there was none.
func ExampleClient_Upgrade() {
	c := &control.Client{Path: "/nonexistent/svc.sock"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	res, err := c.Upgrade(ctx)
	var ce *control.Error
	switch {
	case err == nil:
		fmt.Printf("pid %d serves as generation %d\n", res.SuccessorPID, res.Successor())
	case errors.Is(err, control.ErrUpgradeFailed) && errors.As(err, &ce):
		fmt.Println("the successor failed:", ce.Upgrade.Reason, "- the old generation serves on")
	case errors.Is(err, control.ErrInProgress):
		fmt.Println("another upgrade is running")
	case errors.Is(err, control.ErrTooManyDraining):
		fmt.Println("older generations still drain; try again later")
	case errors.Is(err, control.ErrUnreachable):
		fmt.Println("no service listens on", c.Path)
	case errors.Is(err, control.ErrNoReply):
		fmt.Println("no reply: the outcome is unknown; ask with Status")
	default:
		fmt.Println(err)
	}
	// Output: no service listens on /nonexistent/svc.sock
}

// SIGHUP upgrades, SIGTERM and SIGINT stop gracefully; a second stop
// signal exits at once if Force says so.
func ExampleHandleSignals() {
	upg, err := molt.New(molt.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	stopSignals := control.HandleSignals(upg, control.SignalOptions{
		Force: func(os.Signal) { os.Exit(1) },
	})
	defer stopSignals()
	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}

	syscall.Kill(os.Getpid(), syscall.SIGTERM) // what systemctl stop does
	<-upg.Exit()
	// ... drain ...
	fmt.Println("exit:", upg.Reason())
	// Output: exit: stopped
}

// Expvar shows the status on /debug/vars once published:
// expvar.Publish("molt", control.Expvar(upg)).
func ExampleExpvar() {
	upg, err := molt.New(molt.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	v := control.Expvar(upg)
	var st control.Status
	if err := json.Unmarshal([]byte(v.String()), &st); err != nil {
		log.Fatal(err)
	}
	fmt.Println("generation", st.Generation, st.State, "upgrades", st.Upgrades)
	// Output: generation 1 starting upgrades 0
}
