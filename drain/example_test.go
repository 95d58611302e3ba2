package drain_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/moltgo/molt/drain"
)

// Serve an http.Server through drain, then drain it: the request that
// arrived before the drain is answered, with "Connection: close" if it was
// still running.
func ExampleHTTPServer() {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // from molt's Upgrader in a real service
	if err != nil {
		log.Fatal(err)
	}
	srv := drain.NewHTTPServer(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	})})
	go srv.Serve(ln)

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("drained:", srv.Drain(ctx))
	http.DefaultClient.CloseIdleConnections()
	// Output:
	// hello
	// drained: <nil>
}

// A custom TCP server drains with a Tracker: handlers learn of the drain
// from Draining, finish their exchange and close; Drain returns when all
// connections are closed.
func ExampleTracker() {
	raw, err := net.Listen("tcp", "127.0.0.1:0") // from molt's Upgrader in a real service
	if err != nil {
		log.Fatal(err)
	}
	tr := drain.NewTracker()
	ln := tr.Listener(raw)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				<-tr.Draining() // a real handler serves until then
				io.WriteString(c, "bye\n")
			}()
		}
	}()
	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for tr.Active() == 0 { // wait until the server accepted it
		time.Sleep(time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("drained:", tr.Drain(ctx))
	b, _ := io.ReadAll(c)
	fmt.Printf("client read %q\n", b)
	// Output:
	// drained: <nil>
	// client read "bye\n"
}
