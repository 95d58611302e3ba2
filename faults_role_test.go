//go:build linux

package molt_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/drain"
	"github.com/moltgo/molt/internal/handoff"
	"github.com/moltgo/molt/internal/proctest"
)

// The program the fault-injection suite (faults_cases_test.go) runs as
// every process but the test's own: the "fault" role, a service that
// fails at the step it is told to.

// Environment of the "fault" role.
const (
	envFault        = "MOLT_FAULT"         // what this process does wrong; see roleFault
	envFaultNext    = "MOLT_FAULT_NEXT"    // MOLT_FAULT for this process's successor
	envFaultParent  = "MOLT_FAULT_PARENT"  // "block-before-ack": stall between the successor's READY and the ACK
	envFaultFiles   = "MOLT_FAULT_FILES"   // generation 1 adds this many files ("f0"...) before its listener; successors claim them
	envFaultExtra   = "MOLT_FAULT_EXTRA"   // "network address" of a second listener
	envFaultPIDFile = "MOLT_FAULT_PIDFILE" // Options.PIDFile
	envFaultAfter   = "MOLT_FAULT_AFTER"   // for the *-in-probation faults: fail this long after Ready, not after 20 requests
	envTakeoverSock = "MOLT_TEST_TAKEOVER" // Options.TakeoverSocket
)

func init() { roles["fault"] = roleFault }

// roleFault is a service under molt (HTTP answering "pid generation
// body-length", POST /stop stops it, SIGHUP upgrades it, after an upgrade
// it drains and exits) that fails at the step MOLT_FAULT names:
//
//	crash-before-new     SIGKILLs itself before New reads anything
//	crash-mid-inventory  SIGKILLs itself between two inventory batches (received in the background after New)
//	crash-before-ready   SIGKILLs itself after New and Listen, before Ready
//	serve-then-crash     serves before Ready (as README shows) and SIGKILLs itself after 20 requests
//	crash-after-ready    SIGKILLs itself right after READY was sent, before the ACK
//	hang-in-init         starts a grandchild, then waits forever before Ready (the test SIGSTOPs it)
//	low-nofile           lowers RLIMIT_NOFILE to 40 before New
//	release              waits for a line on standard input before Ready
//	pause-before-new     once the whole hand-off is queued, waits for its parent's death before New
//	pause-mid-inventory  the same, but between two inventory batches
//	pause-before-ready   serves, then waits for its parent's death (WaitForParent) before Ready
//	exit-in-probation    after Ready, exits with status 3 once it served 20 requests, or MOLT_FAULT_AFTER after Ready
//	rollback-in-probation after Ready, calls RollBack then (its parent has it on probation)
//	stop-in-probation    after Ready, tries to upgrade, then stops
//
// With no fault it serves. Processes that fail never accepted a connection,
// except serve-then-crash. Every step is reported as an event.
func roleFault() int {
	fault := os.Getenv(envFault)
	pid, ppid := os.Getpid(), os.Getppid()
	files, _ := strconv.Atoi(os.Getenv(envFaultFiles))
	proctest.Say("started pid=%d fault=%s", pid, fault)
	switch fault {
	case "crash-before-new":
		die()
	case "pause-before-new":
		waitHandoffQueued(ppid, files)
		proctest.Say("paused step=before-new pid=%d", pid)
		proctest.AwaitGone(ppid, proctest.Patience)
	case "crash-mid-inventory":
		handoff.TestHookBatchReceived = func(got, total int) {
			proctest.Say("crashing step=mid-inventory pid=%d received=%d total=%d", pid, got, total)
			die()
		}
	case "pause-mid-inventory":
		waitHandoffQueued(ppid, files)
		handoff.TestHookBatchReceived = func(got, total int) {
			proctest.Say("paused step=mid-inventory pid=%d received=%d total=%d", pid, got, total)
			proctest.AwaitGone(ppid, proctest.Patience)
		}
	case "low-nofile":
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 40, Max: 40}); err != nil {
			proctest.Say("setrlimit-error err=%q", err.Error())
			return 16
		}
	}
	// The inventory arrives in the background, through the hook set
	// above (which stays set: that goroutine reads it).
	u := mustNew(faultOptions())
	claimed := 0
	for i := range files {
		name := "f" + strconv.Itoa(i)
		if u.HasParent() {
			if _, err := u.File(name); err == nil {
				claimed++
			}
		} else if f, err := os.Open(os.DevNull); err == nil && u.AddFile(name, f) == nil {
			claimed++
		}
	}
	ln := mustListen(u)
	lns := []net.Listener{ln}
	if extra := os.Getenv(envFaultExtra); extra != "" {
		network, addr, _ := strings.Cut(extra, " ")
		l, err := u.Listen(network, addr)
		if err != nil {
			proctest.Say("listen-error err=%q", err.Error())
			return 11
		}
		lns = append(lns, l)
	}
	// Everything inherited is claimed by now, so it has all arrived.
	inherited := len(u.Stats().Inventory)
	var served atomic.Int64
	servedEnough := make(chan struct{})
	srv := drain.NewHTTPServer(&http.Server{Handler: faultHandler(u, func() {
		if served.Add(1) == 20 {
			close(servedEnough)
		}
	})})
	serve := func() {
		for _, l := range lns {
			go srv.Serve(l)
		}
	}
	proctest.Say("initialising pid=%d gen=%d parent=%d inherited=%d files=%d", pid, u.Generation(), u.ParentPID(), inherited, claimed)
	early := fault == "serve-then-crash" || fault == "pause-before-ready"
	if early {
		serve()
	}
	switch fault {
	case "crash-before-ready":
		proctest.Say("crashing step=before-ready pid=%d", pid)
		die()
	case "serve-then-crash":
		select {
		case <-servedEnough:
		case <-time.After(time.Minute):
		}
		proctest.Say("crashing step=serving-before-ready pid=%d served=%d", pid, served.Load())
		die()
	case "hang-in-init":
		gc := exec.Command("sleep", "3600")
		if err := gc.Start(); err != nil {
			proctest.Say("hang-error err=%q", err.Error())
			return 13
		}
		proctest.Say("hanging pid=%d grandchild=%d", pid, gc.Process.Pid)
		select {} // until killed
	case "pause-before-ready":
		proctest.Say("paused step=before-ready pid=%d", pid)
		if err := u.WaitForParent(context.Background()); err != nil {
			proctest.Say("wait-error pid=%d err=%q", pid, err.Error())
			return 14
		}
	case "crash-after-ready":
		molt.SetTestHookReadySent(func() {
			proctest.Say("crashing step=after-ready pid=%d", pid)
			die()
		})
	case "release":
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	if os.Getenv(envFaultParent) == "block-before-ack" {
		u.OnCommit(func(_ context.Context, successor int) {
			proctest.Say("acking pid=%d successor=%d", pid, successor)
			select {} // until the test kills this process
		})
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	if err := u.Ready(); err != nil {
		proctest.Say("ready-error pid=%d err=%q", pid, err.Error())
		return 12
	}
	if !early {
		serve()
	}
	proctest.Say("ready pid=%d gen=%d addr=%s", pid, u.Generation(), ln.Addr())
	switch fault {
	case "exit-in-probation", "rollback-in-probation":
		if after, err := time.ParseDuration(os.Getenv(envFaultAfter)); err == nil {
			time.Sleep(after) // the fault: how long it lives after Ready
		} else {
			select {
			case <-servedEnough:
			case <-time.After(time.Minute):
			}
		}
		if fault == "exit-in-probation" {
			proctest.Say("exiting step=probation pid=%d served=%d at=%d", pid, served.Load(), time.Now().UnixNano())
			os.Exit(3)
		}
		err := u.RollBack(errors.New("health check failed"))
		proctest.Say("rolling-back step=probation pid=%d served=%d err=%v", pid, served.Load(), err)
		select {} // until the parent kills this process
	case "stop-in-probation":
		err := u.Upgrade(context.Background())
		proctest.Say("upgrade-refused step=probation pid=%d in-progress=%t err=%q", pid, errors.Is(err, molt.ErrUpgradeInProgress), errorText(err))
		u.Stop()
		proctest.Say("stopped step=probation pid=%d", pid)
		return 0
	}
	go func() {
		for range hup {
			err := u.Upgrade(context.Background())
			proctest.Say("upgraded pid=%d err=%v", pid, err)
		}
	}()
	<-u.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv.Drain(ctx)
	u.Stop()
	proctest.Say("exit pid=%d reason=%s", pid, u.Reason())
	return 0
}

// faultOptions: the role's successor plays "fault" with MOLT_FAULT_NEXT.
func faultOptions() molt.Options {
	return molt.Options{
		Logger:         roleLogger(),
		ReadyTimeout:   30 * time.Second,
		PIDFile:        os.Getenv(envFaultPIDFile),
		TakeoverSocket: os.Getenv(envTakeoverSock),
		Command: func(cmd *exec.Cmd) error {
			cmd.Env = append(cmd.Env, envRole+"=fault", envFault+"="+os.Getenv(envFaultNext),
				envFaultNext+"=", envFaultParent+"=")
			return nil
		},
	}
}

// faultHandler answers "pid generation body-length" on / and stops the
// Upgrader on POST /stop. onRequest, if set, is called for every answer.
func faultHandler(u *molt.Upgrader, onRequest func()) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if onRequest != nil {
			onRequest()
		}
		fmt.Fprintf(w, "%d %d %d", os.Getpid(), u.Generation(), n)
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "stopping")
		go u.Stop()
	})
	return mux
}

func die() {
	unix.Kill(os.Getpid(), unix.SIGKILL)
	select {}
}

// waitHandoffQueued waits (bounded) until the whole hand-off a parent of
// generation 1 with files files and a "tcp 127.0.0.1:0" listener sends
// (HELLO and every INVENTORY batch) is in this process's end of the
// channel: a parent killed after that has handed over everything.
func waitHandoffQueued(ppid, files int) {
	fd, _ := strconv.Atoi(os.Getenv("MOLT_HANDOFF_FD"))
	es := make([]handoff.Entry, 0, files+1)
	for i := range files {
		es = append(es, handoff.Entry{Kind: handoff.KindFile, Name: "f" + strconv.Itoa(i)})
	}
	es = append(es, handoff.Entry{Kind: handoff.KindListener, Network: "tcp4", Addr: "127.0.0.1:0"})
	want := len(handoff.AppendFrame(nil, handoff.TypeHello, handoff.Hello{Generation: 2, ParentPID: ppid, Entries: len(es)}.Marshal()))
	for i := 0; i < len(es); i += handoff.MaxFDsPerMessage {
		want += len(handoff.AppendFrame(nil, handoff.TypeInventory, handoff.MarshalEntries(es[i:min(i+handoff.MaxFDsPerMessage, len(es))])))
	}
	have := 0
	queued := proctest.Until(proctest.Patience, func() bool {
		n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		if err != nil {
			proctest.Say("queue-error err=%q", err.Error())
			os.Exit(17)
		}
		have = n
		return have >= want
	})
	if queued {
		return
	}
	proctest.Say("queue-timeout have=%d want=%d", have, want)
	os.Exit(17) // the test then misses the "paused" event and says so
}

func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
