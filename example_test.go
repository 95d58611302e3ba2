//go:build unix

package molt_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/drain"
)

// A service's main: take the listeners from molt, serve, say ready,
// upgrade on SIGHUP, and drain when a successor took over (or on SIGTERM).
// This is the skeleton the README and the guides refer to.
func Example() {
	upg, err := molt.New(molt.Options{ReadyTimeout: 30 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	ln, err := upg.Listen("tcp", "127.0.0.1:0") // inherited from the previous generation, or new
	if err != nil {
		log.Fatal(err)
	}
	srv := drain.NewHTTPServer(&http.Server{Handler: http.NotFoundHandler()})
	go srv.Serve(ln)

	// SIGHUP upgrades (the error says why no successor took over);
	// SIGTERM stops. Handle them before Ready: a reload that finds no
	// handler kills the process.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
	defer func() { signal.Stop(sigs); close(sigs) }() // ends the loop below
	go func() {
		for sig := range sigs {
			if sig != syscall.SIGHUP {
				upg.Stop()
				return
			}
			if err := upg.Upgrade(context.Background()); err != nil {
				log.Print(err)
			}
		}
	}()

	if err := upg.Ready(); err != nil { // the parent, if any, stops accepting now
		log.Fatal(err)
	}

	go upg.Stop() // here the example stops itself, as SIGTERM would

	<-upg.Exit() // a successor took over, or the service was stopped
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Drain(ctx); err != nil { // finish what this process accepted
		log.Print(err)
	}
	fmt.Println("generation", upg.Generation(), "exits:", upg.Reason())
	// Output: generation 1 exits: stopped
}

func ExampleNew() {
	upg, err := molt.New(molt.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	fmt.Println("generation:", upg.Generation())
	fmt.Println("started by a previous generation:", upg.HasParent())
	// Output:
	// generation: 1
	// started by a previous generation: false
}

// Listen returns the inherited socket when there is one; addresses are
// compared as the kernel binds them, and closing the listener releases it.
func ExampleUpgrader_Listen() {
	upg, err := molt.New(molt.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	ln, err := upg.Listen("tcp", "localhost:0") // resolved once: 127.0.0.1
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ln.Addr().Network())
	ln.Close() // the port is closed unless a successor holds it
	// Output: tcp
}

// Upgrade returns an error that says why no successor took over.
func ExampleUpgrader_Upgrade() {
	upg, err := molt.New(molt.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	err = upg.Upgrade(context.Background())
	var ce *molt.ChildError
	switch {
	case err == nil:
		fmt.Println("a successor serves; drain and exit")
	case errors.Is(err, molt.ErrNotReady):
		fmt.Println("not ready yet")
	case errors.Is(err, molt.ErrUpgradeInProgress):
		fmt.Println("another upgrade is running")
	case errors.As(err, &ce):
		fmt.Println("successor", ce.PID, "failed during", ce.Stage, ":", ce.Err)
	}
	// Output: not ready yet
}

// Exit is closed after a successful upgrade or a Stop; Reason tells which.
func ExampleUpgrader_Exit() {
	upg, err := molt.New(molt.Options{})
	if err != nil {
		log.Fatal(err)
	}
	upg.Stop()
	<-upg.Exit()
	fmt.Println(upg.Reason())
	// Output: stopped
}

// A listener made elsewhere (socket activation, a custom socket) travels
// to the next generation under a name.
func ExampleUpgrader_AddListener() {
	upg, err := molt.New(molt.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	ln, err := upg.Listener("admin") // inherited from the previous generation?
	if errors.Is(err, molt.ErrNotFound) {
		fmt.Println("admin listener not inherited: adding it")
		raw, lerr := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
		if lerr != nil {
			log.Fatal(lerr)
		}
		ln, err = upg.AddListener("admin", raw)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ln.Addr().Network())
	// Output:
	// admin listener not inherited: adding it
	// tcp
}
