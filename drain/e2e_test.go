//go:build linux

package drain_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/drain"
)

// The test binary plays the server when envServe is set: a molt service
// that upgrades on SIGHUP and reports on standard output as JSON lines.
const envServe = "MOLT_DRAIN_TEST_SERVE" // "tcp" or "tls"

// envNewConnGrace, in a server process, sets drain's grace for
// connections that sent nothing (a Go duration) and has the server report
// every connection it accepted ("new" events, Addr = the client's).
const envNewConnGrace = "MOLT_DRAIN_TEST_NEWCONN_GRACE"

// envTakeover, if set, names the takeover socket every server offers and
// takes over from (molt.Options.TakeoverSocket and TakeoverFrom).
const envTakeover = "MOLT_DRAIN_TEST_TAKEOVER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(envServe); mode != "" {
		os.Exit(serve(mode))
	}
	os.Exit(m.Run())
}

type serverEvent struct {
	Event string `json:"event"`
	PID   int    `json:"pid"`
	Gen   uint64 `json:"gen"`
	Addr  string `json:"addr,omitempty"`
	Err   string `json:"err,omitempty"`
	Serve string `json:"serve,omitempty"` // what Serve returned, if not nil
}

func report(e serverEvent) {
	e.PID = os.Getpid()
	b, _ := json.Marshal(e)
	os.Stdout.Write(append(b, '\n'))
}

// serve is the server process: HTTP/1.1 and h2c (or TLS with h2) on a
// listener inherited across upgrades.
func serve(mode string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Upgrades follow each other faster than drains end: no storm guard.
	upg, err := molt.New(molt.Options{Logger: log, ReadyTimeout: time.Minute, MaxDraining: -1,
		TakeoverSocket: os.Getenv(envTakeover), TakeoverFrom: os.Getenv(envTakeover)})
	if err != nil {
		report(serverEvent{Event: "error", Err: err.Error()})
		return 1
	}
	ln, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		report(serverEvent{Event: "error", Err: err.Error()})
		return 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d", os.Getpid())
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %d", os.Getpid(), len(b))
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		for i := range 10 { // about half a second: longer than a hand-off
			fmt.Fprintf(w, "chunk %d\n", i)
			rc.Flush()
			time.Sleep(50 * time.Millisecond)
		}
		fmt.Fprint(w, "end\n")
	})
	srv := &http.Server{Handler: mux, Protocols: new(http.Protocols)}
	if g := os.Getenv(envNewConnGrace); g != "" {
		d, err := time.ParseDuration(g)
		if err != nil {
			report(serverEvent{Event: "error", Err: err.Error()})
			return 1
		}
		drain.SetNewConnGrace(d)
		srv.ConnState = func(c net.Conn, st http.ConnState) {
			if st == http.StateNew {
				report(serverEvent{Event: "new", Addr: c.RemoteAddr().String()})
			}
		}
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	served := ln
	if mode == "tls" {
		srv.Protocols.SetHTTP2(true)
		served = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{testCert()}, NextProtos: []string{"h2", "http/1.1"}})
	}
	ds := drain.NewHTTPServer(srv)
	serveErr := make(chan error, 1)
	go func() { serveErr <- ds.Serve(served) }()
	sig := make(chan os.Signal, 1) // before "ready": the test signals right after it
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM)
	if err := upg.Ready(); err != nil {
		report(serverEvent{Event: "error", Err: err.Error()})
		return 1
	}
	report(serverEvent{Event: "ready", Gen: upg.Generation(), Addr: ln.Addr().String()})

	go func() {
		for s := range sig {
			if s == syscall.SIGTERM {
				upg.Stop()
				return
			}
			if err := upg.Upgrade(context.Background()); err != nil {
				report(serverEvent{Event: "upgrade-failed", Err: err.Error()})
			}
		}
	}()
	<-upg.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = ds.Drain(ctx)
	upg.Stop()
	e := serverEvent{Event: "exit", Gen: upg.Generation()}
	if err != nil {
		e.Err = err.Error()
	}
	// Serve has returned: Drain waits for it. After an upgrade Drain closed
	// its listener, after SIGTERM Stop did; both must give nil.
	if err := <-serveErr; err != nil {
		e.Serve = err.Error()
	}
	report(e)
	return 0
}

// clientKind is one way of talking to the server.
type clientKind struct {
	name string
	do   func(c *http.Client, base string) error
	tr   func() http.RoundTripper
}

func keepAliveTransport(tlsMode bool) func() http.RoundTripper {
	return func() http.RoundTripper {
		return &http.Transport{MaxIdleConnsPerHost: 64, TLSClientConfig: &tls.Config{InsecureSkipVerify: tlsMode}}
	}
}

func expect(resp *http.Response, err error, check func(body string) bool) error {
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !check(string(b)) {
		return fmt.Errorf("status %s, body %q", resp.Status, b)
	}
	return nil
}

func clientKinds(tlsMode bool) []clientKind {
	get := func(c *http.Client, base string) error {
		resp, err := c.Get(base + "/")
		return expect(resp, err, func(b string) bool { _, err := strconv.Atoi(b); return err == nil })
	}
	post := func(c *http.Client, base string) error {
		body := bytes.Repeat([]byte("x"), 1000)
		req, _ := http.NewRequest(http.MethodPost, base+"/echo", bytes.NewReader(body))
		// Go's client never retries a POST without an idempotency key:
		// any connection closed under it fails the request.
		resp, err := c.Do(req)
		return expect(resp, err, func(b string) bool { return strings.HasSuffix(b, " 1000") })
	}
	stream := func(c *http.Client, base string) error {
		resp, err := c.Get(base + "/stream")
		return expect(resp, err, func(b string) bool { return strings.HasSuffix(b, "end\n") })
	}
	kinds := []clientKind{
		{"keep-alive GET", get, keepAliveTransport(tlsMode)},
		{"keep-alive POST (no retry)", post, keepAliveTransport(tlsMode)},
		{"Connection: close", get, func() http.RoundTripper {
			return &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: tlsMode}}
		}},
		{"streaming", stream, keepAliveTransport(tlsMode)},
	}
	h2 := func() http.RoundTripper {
		tr := &http.Transport{Protocols: new(http.Protocols), TLSClientConfig: &tls.Config{InsecureSkipVerify: tlsMode}}
		if tlsMode {
			tr.Protocols.SetHTTP2(true)
		} else {
			tr.Protocols.SetUnencryptedHTTP2(true)
		}
		return tr
	}
	return append(kinds, clientKind{"HTTP/2 POST", post, h2})
}

// TestZeroFailedAcrossUpgrades runs a real server through 10 upgrades
// while clients of every kind keep it busy, and counts failed requests.
func TestZeroFailedAcrossUpgrades(t *testing.T) {
	for _, mode := range []string{"tcp", "tls"} {
		t.Run(mode, func(t *testing.T) { runUpgrades(t, mode, 10, false) })
	}
}

// TestZeroFailedAcrossTakeovers is TestZeroFailedAcrossUpgrades with
// takeovers: each new generation is a process the test starts, which
// takes over through the serving one's takeover socket.
func TestZeroFailedAcrossTakeovers(t *testing.T) {
	for _, mode := range []string{"tcp", "tls"} {
		t.Run(mode, func(t *testing.T) { runUpgrades(t, mode, 10, true) })
	}
}

func runUpgrades(t *testing.T, mode string, upgrades int, takeover bool) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	env := []string{envServe + "=" + mode, "GORACE=halt_on_error=1"} // a data race in any generation stops it, which fails the test
	if takeover {
		env = append(env, envTakeover+"="+filepath.Join(t.TempDir(), "takeover.sock"))
	}
	var started []*exec.Cmd // the processes the test started: the first, and the takers
	start := func() {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = w, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		started = append(started, cmd)
	}
	start()
	if !takeover {
		w.Close()
	} else {
		defer w.Close()
	}
	events := make(chan serverEvent, 64)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var e serverEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				events <- e
			}
		}
	}()
	exits := 0 // exit events seen; every generation must report one
	next := func(kind string) serverEvent {
		t.Helper()
		timeout := time.After(2 * time.Minute)
		for {
			select {
			case e, ok := <-events:
				if !ok {
					t.Fatalf("server output ended while waiting for %q", kind)
				}
				if e.Event == "error" || e.Event == "upgrade-failed" {
					t.Fatalf("server: %s: %s", e.Event, e.Err)
				}
				if e.Event == "exit" {
					exits++
					if e.Err != "" {
						t.Errorf("generation %d drain: %s", e.Gen, e.Err)
					}
					if e.Serve != "" {
						t.Errorf("generation %d Serve = %s, want nil", e.Gen, e.Serve)
					}
				}
				if e.Event == kind {
					return e
				}
			case <-timeout:
				t.Fatalf("no %q event within 2 minutes", kind)
			}
		}
	}
	ready := next("ready")
	pids := []int{ready.PID}
	t.Cleanup(func() {
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		for _, cmd := range started {
			cmd.Wait()
		}
	})
	scheme := "http://"
	if mode == "tls" {
		scheme = "https://"
	}
	base := scheme + ready.Addr

	type tally struct {
		ok, failed int
		errs       []string
	}
	kinds := clientKinds(mode == "tls")
	results := make([]tally, len(kinds))
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const perKind = 4
	for i, k := range kinds {
		client := &http.Client{Transport: k.tr(), Timeout: time.Minute}
		defer client.CloseIdleConnections()
		for range perKind {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; n < 100000; n++ { // bounded; stop ends it sooner
					select {
					case <-stop:
						return
					default:
					}
					err := k.do(client, base)
					mu.Lock()
					if err != nil {
						results[i].failed++
						if len(results[i].errs) < 3 {
							results[i].errs = append(results[i].errs, err.Error())
						}
					} else {
						results[i].ok++
					}
					mu.Unlock()
				}
			}()
		}
	}
	cur := ready.PID
	for i := range upgrades {
		time.Sleep(100 * time.Millisecond) // spacing between upgrades, not synchronisation
		if takeover {
			start()
		} else {
			syscall.Kill(cur, syscall.SIGHUP)
		}
		e := next("ready")
		if e.Gen != uint64(i+2) || e.Addr != ready.Addr {
			t.Fatalf("upgrade %d: generation %d on %s, want %d on %s", i+1, e.Gen, e.Addr, i+2, ready.Addr)
		}
		cur = e.PID
		pids = append(pids, cur)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	for i, k := range kinds {
		res := results[i]
		t.Logf("%-28s %7d ok %3d failed %v", k.name, res.ok, res.failed, res.errs)
		if res.failed != 0 || res.ok == 0 {
			t.Errorf("%s: %d ok, %d failed across %d upgrades; want >0 and 0: %v", k.name, res.ok, res.failed, upgrades, res.errs)
		}
	}
	syscall.Kill(cur, syscall.SIGTERM)
	for exits < len(pids) {
		next("exit")
	}
}

// TestIdleConnectionHandedOver: a keep-alive connection that is idle
// during an upgrade is not closed: the successor serves its next request,
// on the same TCP connection.
func TestIdleConnectionHandedOver(t *testing.T) { quietConnectionHandedOver(t, true) }

// TestQuietNewConnectionHandedOver: a connection that has sent nothing
// for longer than drain's grace for such connections (as Go's Transport
// leaves the ones it dialed for a request another connection served) is
// handed over, not closed: its first request, sent after the upgrade, is
// served by the successor on the same TCP connection. Closing it raced
// that request (EOF), as drainbench saw once or twice per run.
func TestQuietNewConnectionHandedOver(t *testing.T) { quietConnectionHandedOver(t, false) }

// quietConnectionHandedOver checks that a connection quiet during an
// upgrade is served by the successor afterwards: idle after a first
// request, or new and silent since it was accepted (with drain's grace
// for those set to 1 ms, so that it has passed when the drain starts).
func quietConnectionHandedOver(t *testing.T, used bool) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envServe+"=tcp", "GORACE=halt_on_error=1")
	if !used {
		cmd.Env = append(cmd.Env, envNewConnGrace+"=1ms")
	}
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	dec := json.NewDecoder(r)
	var early []serverEvent // events that came before the one waited for
	next := func(kind string) serverEvent {
		t.Helper()
		for i, e := range early {
			if e.Event == kind {
				early = append(early[:i], early[i+1:]...)
				return e
			}
		}
		for {
			var e serverEvent
			if err := dec.Decode(&e); err != nil {
				t.Fatalf("waiting for %q: %v", kind, err)
			}
			if e.Event == kind {
				return e
			}
			early = append(early, e)
		}
	}
	ready := next("ready")
	var pids []int
	t.Cleanup(func() {
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		cmd.Wait()
	})
	pids = append(pids, ready.PID)

	// One connection, used by hand: the test sees exactly what the client sees.
	c, err := net.Dial("tcp", ready.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	get := func() (string, error) {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return "", err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.Close {
			return string(b), fmt.Errorf("response asks to close the connection")
		}
		return string(b), err
	}
	if used {
		if body, err := get(); err != nil || body != strconv.Itoa(ready.PID) {
			t.Fatalf("first request = %q, %v; want served by %d", body, err, ready.PID)
		}
	} else {
		// Generation 1 has accepted it (and not a successor later).
		for e := next("new"); e.Addr != c.LocalAddr().String(); e = next("new") {
		}
	}
	syscall.Kill(ready.PID, syscall.SIGHUP) // the connection is idle (or new) now
	gen2 := next("ready")
	pids = append(pids, gen2.PID)
	if e := next("exit"); e.PID != ready.PID || e.Err != "" || e.Serve != "" {
		t.Fatalf("exit event %+v, want generation 1 drained cleanly", e)
	}
	body, err := get() // generation 1 is gone: only a hand-over can answer this
	if err != nil || body != strconv.Itoa(gen2.PID) {
		t.Fatalf("request on the idle connection after the upgrade = %q, %v; want served by %d on the same connection", body, err, gen2.PID)
	}
	syscall.Kill(gen2.PID, syscall.SIGTERM) // a plain Stop: no successor
	if e := next("exit"); e.Err != "" || e.Serve != "" {
		t.Errorf("exit event after SIGTERM %+v, want a clean drain and Serve = nil", e)
	}
}
