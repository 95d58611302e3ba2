package drain_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moltgo/molt/drain"
)

func startServer(t *testing.T, h http.Handler) (*drain.HTTPServer, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ds := drain.NewHTTPServer(&http.Server{Handler: h}, drain.Options{IdleGrace: 50 * time.Millisecond})
	go ds.Serve(ln)
	return ds, ln.Addr().String()
}

// TestDrainAnswersRunningRequest: a request running when the drain starts
// is answered, with Connection: close, before Drain returns.
func TestDrainAnswersRunningRequest(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	ds, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "done")
	}))
	type result struct {
		resp *http.Response
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			got <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- result{resp, string(b), err}
	}()
	<-entered
	drained := make(chan error, 1)
	go func() { drained <- ds.Drain(context.Background()) }()
	<-ds.Draining()
	close(release)
	r := <-got
	if r.err != nil || r.body != "done" || !r.resp.Close {
		t.Fatalf("response during drain = %q, close=%v, %v; want \"done\" with Connection: close", r.body, r.resp != nil && r.resp.Close, r.err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain = %v", err)
	}
}

// TestDrainWaitsForHijacked: a hijacked connection (a WebSocket, say) is
// waited for until its handler closes it after Draining.
func TestDrainWaitsForHijacked(t *testing.T) {
	var ds *drain.HTTPServer
	ds, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		go func() {
			<-ds.Draining()
			io.WriteString(c, "goodbye\n")
			c.Close()
		}()
	}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade response: %v %v", resp, err)
	}
	if err := ds.Drain(context.Background()); err != nil {
		t.Fatalf("Drain = %v", err)
	}
	if line, _ := br.ReadString('\n'); line != "goodbye\n" {
		t.Errorf("hijacked connection got %q before the drain ended, want goodbye", line)
	}
}

// TestDrainDeadline: what is still running when the deadline passes is
// closed, and Drain returns the context's error.
func TestDrainDeadline(t *testing.T) {
	entered := make(chan struct{})
	ds, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done() // never answers on its own
	}))
	failed := make(chan error, 1)
	go func() {
		c := &http.Client{Timeout: time.Minute}
		resp, err := c.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
		failed <- err
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := ds.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain = %v, want context.DeadlineExceeded", err)
	}
	if err := <-failed; err == nil {
		t.Error("the stuck request got an answer, want its connection closed at the deadline")
	}
}

// TestDrainClosesIdleWithoutSuccessor: without molt (or a successor) an
// idle keep-alive connection is closed after the idle grace, and the drain
// ends.
func TestDrainClosesIdleWithoutSuccessor(t *testing.T) {
	ds, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hi")
	}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err := ds.Drain(context.Background()); err != nil {
		t.Fatalf("Drain = %v", err)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) && !strings.Contains(fmt.Sprint(err), "reset") {
		t.Errorf("idle connection after the drain: read = %v, want EOF", err)
	}
}
