//go:build unix

package molt_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/drain"
)

// A service's main: take the listener from molt, serve, say ready, and
// drain when a successor took over (or when told to stop).
func Example() {
	upg, err := molt.New(molt.Options{ReadyTimeout: 30 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	ln, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := drain.NewHTTPServer(&http.Server{Handler: http.NotFoundHandler()})
	go srv.Serve(ln)
	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}

	// Elsewhere, on SIGHUP: err := upg.Upgrade(ctx). Here the service is
	// told to stop instead.
	go upg.Stop()

	<-upg.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Drain(ctx); err != nil {
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
