package drain_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/moltgo/molt/drain"
)

// echoLines serves a line protocol: each line is answered with "ok <line>";
// "bye" ends the exchange once the tracker drains.
func echoLines(ln net.Listener, draining <-chan struct{}) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				fmt.Fprintf(c, "ok %s", line)
				select {
				case <-draining:
					if line == "bye\n" {
						return
					}
				default:
				}
			}
		}()
	}
}

func TestTrackerDrainWaitsForConnections(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := drain.NewTracker()
	ln := tr.Listener(raw)
	go echoLines(ln, tr.Draining())

	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	r := bufio.NewReader(c)
	fmt.Fprint(c, "one\n")
	if got, _ := r.ReadString('\n'); got != "ok one\n" {
		t.Fatalf("reply = %q", got)
	}
	if got := tr.Active(); got != 1 {
		t.Fatalf("Active = %d, want 1", got)
	}

	done := make(chan error, 1)
	go func() { done <- tr.Drain(context.Background()) }()
	<-tr.Draining()
	select {
	case err := <-done:
		t.Fatalf("Drain returned %v with a connection still open", err)
	default:
	}
	fmt.Fprint(c, "two\n") // the exchange goes on during the drain
	if got, _ := r.ReadString('\n'); got != "ok two\n" {
		t.Fatalf("reply during drain = %q", got)
	}
	select {
	case err := <-done:
		t.Fatalf("Drain returned %v with a connection still open", err)
	default:
	}
	fmt.Fprint(c, "bye\n") // answered, then the server closes
	if got, _ := r.ReadString('\n'); got != "ok bye\n" {
		t.Fatalf("reply during drain = %q", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("Drain = %v", err)
	}
	if _, err := net.Dial("tcp", raw.Addr().String()); err == nil {
		t.Error("listener still accepts after Drain")
	}
}

func TestTrackerDrainDeadline(t *testing.T) {
	tr, c, _ := stuckTracker(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tr.Drain(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Drain past its deadline = %v, want context.Canceled", err)
	}
	if got := tr.Active(); got != 0 {
		t.Errorf("Active after a forced drain = %d, want 0", got)
	}
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("connection still open after the forced drain")
	}
}

// TestTrackerDrainAgain: a Drain after the first returns the first's
// result, here the error of a drain cut short by its context, and does not
// panic.
func TestTrackerDrainAgain(t *testing.T) {
	tr, _, _ := stuckTracker(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tr.Drain(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("first Drain = %v, want context.Canceled", err)
	}
	for i := range 2 {
		if err := tr.Drain(context.Background()); !errors.Is(err, context.Canceled) {
			t.Errorf("Drain call %d = %v, want the first call's context.Canceled", i+2, err)
		}
	}
}

// TestTrackerConcurrentDrains: calls made while the first Drain runs wait
// for it and return its result, unless their own context ends first.
func TestTrackerConcurrentDrains(t *testing.T) {
	tr, _, sc := stuckTracker(t) // sc: the application's side, closed by the test

	first := make(chan error, 1)
	go func() { first <- tr.Drain(context.Background()) }()
	<-tr.Draining() // the first call runs; the open connection holds it
	later := make(chan error, 4)
	for range cap(later) {
		go func() { later <- tr.Drain(context.Background()) }()
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tr.Drain(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Drain with a canceled context during the drain = %v, want context.Canceled", err)
	}
	select {
	case err := <-first:
		t.Fatalf("first Drain returned %v with a connection open", err)
	default:
	}
	sc.Close()
	if err := <-first; err != nil {
		t.Errorf("first Drain = %v", err)
	}
	for range cap(later) {
		if err := <-later; err != nil {
			t.Errorf("concurrent Drain = %v, want the first call's nil", err)
		}
	}
}

// stuckTracker returns a Tracker with one accepted connection whose
// handler never finishes by itself: the client's end, and the
// application's.
func stuckTracker(t *testing.T) (tr *drain.Tracker, client, server net.Conn) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr = drain.NewTracker()
	ln := tr.Listener(raw)
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return tr, c, <-accepted
}
