package drain_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moltgo/molt"
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

// getOnce sends one "Connection: close" request on a connection of its
// own and reads the whole answer, so that nothing of it outlives the call.
func getOnce(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// serveResult waits for the result of a Serve call; the bound only turns a
// hang into a failure.
func serveResult(t *testing.T, served <-chan error) error {
	t.Helper()
	select {
	case err := <-served:
		return err
	case <-time.After(time.Minute):
		t.Fatal("Serve has not returned after a minute")
		return nil
	}
}

func hello(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }

// TestServeAfterStop: molt's Stop, without an upgrade, closes the
// listeners it gave out. Serve on one then returns nil, as its doc says,
// and the drain that follows ends cleanly.
func TestServeAfterStop(t *testing.T) {
	upg, err := molt.New(molt.Options{})
	if errors.Is(err, molt.ErrNotSupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer upg.Stop()
	ln, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ds := drain.NewHTTPServer(&http.Server{Handler: http.HandlerFunc(hello)})
	served := make(chan error, 1)
	go func() { served <- ds.Serve(ln) }()
	if err := upg.Ready(); err != nil {
		t.Fatal(err)
	}
	if got := getOnce(t, ln.Addr().String()); got != "hello" { // Serve is accepting
		t.Fatalf("response = %q, want hello", got)
	}

	upg.Stop()
	if err := serveResult(t, served); err != nil {
		t.Errorf("Serve after Stop = %v, want nil", err)
	}
	<-upg.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ds.Drain(ctx); err != nil {
		t.Errorf("Drain after Stop = %v, want nil", err)
	}
}

// failingListener's Accept fails with err, for good.
type failingListener struct {
	net.Listener
	err error
}

func (l failingListener) Accept() (net.Conn, error) { return nil, l.err }

// TestServeResult: what Serve returns when its listener is closed by its
// owner, when the http.Server was shut down behind the drain's back, when
// Accept fails, and when it is called after Drain.
func TestServeResult(t *testing.T) {
	listen := func(t *testing.T) net.Listener {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	drained := func(t *testing.T, ds *drain.HTTPServer) {
		t.Helper()
		if err := ds.Drain(context.Background()); err != nil {
			t.Errorf("Drain = %v", err)
		}
	}

	t.Run("listener closed", func(t *testing.T) {
		ln := listen(t)
		ds := drain.NewHTTPServer(&http.Server{Handler: http.HandlerFunc(hello)})
		served := make(chan error, 1)
		go func() { served <- ds.Serve(ln) }()
		if got := getOnce(t, ln.Addr().String()); got != "hello" {
			t.Fatalf("response = %q, want hello", got)
		}
		ln.Close()
		if err := serveResult(t, served); err != nil {
			t.Errorf("Serve after its listener was closed = %v, want nil", err)
		}
		drained(t, ds)
	})

	t.Run("server closed", func(t *testing.T) {
		ln := listen(t)
		hs := &http.Server{Handler: http.HandlerFunc(hello)}
		ds := drain.NewHTTPServer(hs)
		served := make(chan error, 1)
		go func() { served <- ds.Serve(ln) }()
		if got := getOnce(t, ln.Addr().String()); got != "hello" {
			t.Fatalf("response = %q, want hello", got)
		}
		hs.Close() // not how to stop it: the drain is bypassed, and Serve says so
		if err := serveResult(t, served); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve after http.Server.Close = %v, want http.ErrServerClosed", err)
		}
		drained(t, ds)
	})

	t.Run("accept error", func(t *testing.T) {
		boom := errors.New("accept: boom")
		ds := drain.NewHTTPServer(&http.Server{Handler: http.HandlerFunc(hello)})
		if err := ds.Serve(failingListener{listen(t), boom}); !errors.Is(err, boom) {
			t.Errorf("Serve on a failing listener = %v, want %v", err, boom)
		}
		drained(t, ds)
	})

	t.Run("after Drain", func(t *testing.T) {
		ln := listen(t)
		ds := drain.NewHTTPServer(&http.Server{Handler: http.HandlerFunc(hello)})
		drained(t, ds)
		if err := ds.Serve(ln); err != nil {
			t.Errorf("Serve after Drain = %v, want nil", err)
		}
		// Serve closed it, as Drain does the listeners it serves.
		if err := ln.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("listener after Serve returned: Close = %v, want it closed already", err)
		}
	})
}

// TestDrainAgain: a Drain after the first returns the first's result, here
// the error of a drain cut short by its context, and does not panic.
func TestDrainAgain(t *testing.T) {
	entered := make(chan struct{})
	ds, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done() // never answers on its own
	}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ds.Drain(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("first Drain = %v, want context.Canceled", err)
	}
	for i := range 2 {
		if err := ds.Drain(context.Background()); !errors.Is(err, context.Canceled) {
			t.Errorf("Drain call %d = %v, want the first call's context.Canceled", i+2, err)
		}
	}
}

// TestConcurrentDrains: calls made while the first Drain runs wait for it
// and return its result, unless their own context ends first; only the
// first call's context bounds the drain.
func TestConcurrentDrains(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	ds, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "done")
	}))
	answered := make(chan string, 1)
	go func() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			answered <- err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		b, _ := io.ReadAll(c) // the drain closes the connection after the answer
		answered <- string(b)
	}()
	<-entered

	first := make(chan error, 1)
	go func() { first <- ds.Drain(context.Background()) }()
	<-ds.Draining() // the first call runs; the request holds it
	later := make(chan error, 4)
	for range cap(later) {
		go func() { later <- ds.Drain(context.Background()) }()
	}
	// A later caller that gives up returns its own context's error while
	// the drain goes on.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ds.Drain(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Drain with a canceled context during the drain = %v, want context.Canceled", err)
	}
	select {
	case err := <-first:
		t.Fatalf("first Drain returned %v while a request was running", err)
	default:
	}

	close(release)
	if got := <-answered; !strings.HasSuffix(got, "done") || !strings.Contains(got, "Connection: close") {
		t.Errorf("client read %q, want the answer with Connection: close", got)
	}
	if err := <-first; err != nil {
		t.Errorf("first Drain = %v", err)
	}
	for range cap(later) {
		if err := <-later; err != nil {
			t.Errorf("concurrent Drain = %v, want the first call's nil", err)
		}
	}
}

// TestNewHTTPServerChainsHooks: NewHTTPServer sets srv's Handler,
// ConnState and ConnContext (as documented) and calls the caller's own
// ConnState and ConnContext from them.
func TestNewHTTPServerChainsHooks(t *testing.T) {
	type key struct{}
	var mu sync.Mutex
	var states []http.ConnState
	closed := make(chan struct{}) // the caller's ConnState saw StateClosed
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Context().Value(key{}))
	})
	hs := &http.Server{
		Handler: mux,
		ConnState: func(c net.Conn, st http.ConnState) {
			mu.Lock()
			states = append(states, st)
			mu.Unlock()
			if st == http.StateClosed {
				close(closed)
			}
		},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, key{}, "caller's context")
		},
	}
	ds := drain.NewHTTPServer(hs)
	if hs.Handler == http.Handler(mux) {
		t.Error("srv.Handler is the caller's: NewHTTPServer did not wrap it")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ds.Serve(ln) }()
	if got := getOnce(t, ln.Addr().String()); got != "caller's context" {
		t.Errorf("handler saw %q, want the value of the caller's ConnContext", got)
	}
	if err := ds.Drain(context.Background()); err != nil {
		t.Fatalf("Drain = %v", err)
	}
	if err := serveResult(t, served); err != nil {
		t.Errorf("Serve = %v", err)
	}
	select { // it runs after the drain's own books, which Drain waits for
	case <-closed:
	case <-time.After(time.Minute):
		t.Fatal("the caller's ConnState never saw StateClosed")
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []http.ConnState{http.StateNew, http.StateActive, http.StateClosed}; !slices.Equal(states, want) {
		t.Errorf("caller's ConnState saw %v, want %v", states, want)
	}
}
