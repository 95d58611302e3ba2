//go:build linux

package molt_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/proctest"
)

// TestChainKeepsConnsWhenSuccessorExits: generation 1 (this process)
// drains and hands idle connections to generation 2, which drains too and
// would pass them on to its own successor. Once that successor
// (generation 3) has exited, generation 2 can pass nothing on, so
// generation 1's HandOver must fail with ErrNoSuccessor and leave the
// connection with generation 1, working, instead of handing it to
// generation 2 to be closed under its client.
func TestChainKeepsConnsWhenSuccessorExits(t *testing.T) {
	ev, w := pipe(t)
	goroutines := runtime.NumGoroutine() // the events' reader ends at the cleanup
	u := newUpgrader(t, molt.Options{MaxDraining: -1,
		Command: roleCommand("serve", "tcp 127.0.0.1:0", w, nil, envNextRole+"=exit-after-ready")})
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()

	// Idle connections of generation 1, each with a read waiting for the
	// next request, as net/http's would be. Those handed over before
	// generation 2 has noticed its successor's exit are lost to the test:
	// enough of them for that.
	const conns = 100
	type idleConn struct {
		client, served net.Conn
		got            chan string // what the served side read, or why it stopped
	}
	idle := make([]idleConn, conns)
	for i := range idle {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		ic := idleConn{client: c, served: s, got: make(chan string, 1)}
		go func() {
			buf := make([]byte, 4096)
			n, err := ic.served.Read(buf)
			if err != nil {
				ic.got <- "error: " + err.Error()
				return
			}
			ic.got <- string(buf[:n])
		}()
		idle[i] = ic
		t.Cleanup(func() { c.Close(); s.Close() })
	}

	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), proctest.Patience)
	defer cancel()
	if err := u.Upgrade(ctx); err != nil {
		t.Fatalf("upgrade to generation 2: %v", err)
	}
	gen2 := ev.Wait(t, "ready")

	// A request generation 2 is still answering keeps it draining after
	// its own upgrade.
	holdReq, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/hold", nil)
	holdClient := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	holdDone := make(chan struct{})
	holdCtx, release := context.WithCancel(ctx)
	defer func() { release(); <-holdDone }()
	go func() {
		defer close(holdDone)
		if resp, err := holdClient.Do(holdReq.WithContext(holdCtx)); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	if h := ev.Wait(t, "holding"); h["pid"] != gen2["pid"] {
		t.Fatalf("the held request reached pid %s, want generation 2 (pid %s)", h["pid"], gen2["pid"])
	}
	if out, err := httpPost("http://" + addr + "/upgrade"); err != nil {
		t.Fatalf("upgrade to generation 3: %v (%s)", err, out)
	}
	gen3 := mustAtoi(t, ev.Wait(t, "exiting")["pid"])
	proctest.WaitGone(t, gen3) // reaped by generation 2, which saw it exit

	kept := -1
	proctest.Until(proctest.Patience, func() bool {
		for i := range idle {
			if idle[i].served == nil {
				continue
			}
			err := molt.HandOver(idle[i].served, 4096)
			if err == nil { // went to generation 2 before it noticed
				idle[i].served = nil
				return false
			}
			if errors.Is(err, molt.ErrConnBusy) { // its read is not waiting yet
				return false
			}
			if !errors.Is(err, molt.ErrNoSuccessor) {
				t.Fatalf("HandOver: %v, want ErrNoSuccessor or success", err)
			}
			kept = i
			return true
		}
		return true // every connection went
	})
	if kept < 0 {
		t.Fatalf("all %d connections were handed to generation 2 after its successor had exited", conns)
	}
	// The connection is generation 1's still, and works.
	ic := idle[kept]
	if _, err := ic.client.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ic.got:
		if got != "GET / HTTP/1.1\r\n\r\n" {
			t.Errorf("generation 1 read %q from the kept connection", got)
		}
	case <-time.After(proctest.Patience):
		t.Fatal("generation 1 read nothing from the kept connection")
	}

	// Nothing of the upgrade is left once generation 1 stops: the watch of
	// its successor ends with it.
	release()
	<-holdDone
	for _, ic := range idle {
		ic.client.Close()
	}
	u.Stop()
	proctest.WaitGone(t, mustAtoi(t, gen2["pid"]))
	proctest.CheckGoroutines(t, "after Stop", goroutines)
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return n
}
