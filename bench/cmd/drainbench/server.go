package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/bench/internal/eventlog"
	"github.com/moltgo/molt/bench/internal/generation"
	"github.com/moltgo/molt/drain"
)

const (
	// streamChunks chunks, one every streamEvery, make one streaming
	// response of about two seconds.
	streamChunks = 20
	streamEvery  = 100 * time.Millisecond
	// serverDrainTimeout bounds one generation's drain.
	serverDrainTimeout = 30 * time.Second
	// serverReadyTimeout bounds the start of a successor.
	serverReadyTimeout = 30 * time.Second
)

// streamBody is the body of a complete GET /stream response.
var streamBody = func() string {
	s := ""
	for i := range streamChunks {
		s += fmt.Sprintf("chunk %02d\n", i)
	}
	return s + "end\n"
}()

// serverEvent is one JSON line a server generation prints. Times are Unix
// nanoseconds of the server's wall clock (the driver runs on the same
// machine).
type serverEvent struct {
	Event   string           `json:"event"` // "ready", "accept" (the first accepted connection), "upgrade", "exit" or "error"
	PID     int              `json:"pid"`
	Gen     uint64           `json:"gen"`
	UnixNS  int64            `json:"t"`
	Addr    string           `json:"addr,omitempty"`     // ready
	TLSAddr string           `json:"tls_addr,omitempty"` // ready: HTTP/2 over TLS, if the driver gave a certificate
	OK      bool             `json:"ok,omitempty"`       // upgrade
	Err     string           `json:"err,omitempty"`      // upgrade, exit (the drain's error), error
	TookUS  int64            `json:"took_us,omitempty"`  // upgrade: the Upgrade call
	DrainUS int64            `json:"drain_us,omitempty"` // exit: the drain
	Reason  string           `json:"reason,omitempty"`   // exit
	Marks   map[string]int64 `json:"marks,omitempty"`    // molt's ready and upgrade: moments of the hand-off (phases.go)
}

// emit stamps e with this process and the time and prints it.
func emit(e serverEvent) {
	e.PID = os.Getpid()
	e.UnixNS = time.Now().UnixNano()
	eventlog.Emit(e)
}

// serverMux serves the three endpoints the clients use.
func serverMux() *http.ServeMux {
	pid := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, pid)
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %d", pid, n)
	})
	// Anything else is a request the clients never send: a sign that the
	// server read a request from the wrong place in the byte stream. Say
	// what it read.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, fmt.Sprintf("drainbench: unexpected request %.40q %.40q", r.Method, r.URL.Path), http.StatusBadRequest)
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		for i := range streamChunks {
			fmt.Fprintf(w, "chunk %02d\n", i)
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-time.After(streamEvery):
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, "end\n")
	})
	return mux
}

// runServer plays one server generation of the system the driver chose
// and returns its exit status.
func runServer() int {
	switch name := os.Getenv(envSystem); name {
	case "", "molt":
		return runMoltServer()
	case "tableflip":
		return runTableflipServer()
	case "naive", "reuseport":
		return runPlainServer(name == "reuseport")
	default:
		return fail(fmt.Errorf("%s=%q: unknown system", envSystem, name))
	}
}

// fail reports err as an error event and returns the exit status 1.
func fail(err error) int {
	emit(serverEvent{Event: "error", Err: err.Error()})
	return 1
}

// newHTTPServer returns the HTTP server every system serves with: the
// same handlers, HTTP/1.1 and h2c, the same timeouts; and, if the driver
// gave a certificate (serverTLSConfig), HTTP/2 and HTTP/1.1 over TLS with
// it in TLSConfig, for a second listener.
func newHTTPServer() (*http.Server, error) {
	tlsConfig, err := serverTLSConfig()
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           serverMux(),
		Protocols:         new(http.Protocols),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         tlsConfig,
		ErrorLog:          log.New(os.Stderr, fmt.Sprintf("drainbench server (pid %d): ", os.Getpid()), 0),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	srv.Protocols.SetHTTP2(tlsConfig != nil)
	return srv, nil
}

// serveNetHTTP serves ln with server, over TLS (the certificate in its
// TLSConfig) if tls is set, as the systems without molt's drain do, and
// reports an unexpected end on stderr.
func serveNetHTTP(server *http.Server, ln net.Listener, tls bool, system string) {
	var err error
	if tls {
		err = server.ServeTLS(ln, "", "")
	} else {
		err = server.Serve(ln)
	}
	if err != http.ErrServerClosed {
		fmt.Fprintf(os.Stderr, "drainbench %s server (pid %d): %v\n", system, os.Getpid(), err)
	}
}

// runMoltServer plays one generation of a molt service.
func runMoltServer() int {
	m := newMarks()
	m.note(markEntered)
	// First of all: SIGHUP's default action would kill the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)

	upgMarks = newMarks()
	logger := slog.New(startedHandler{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), upgMarks}).
		With("pid", os.Getpid())
	// Upgrades come every -interval, faster than the ~2 s streams drain:
	// no storm guard, so that every system is upgraded as often.
	upg, err := molt.New(molt.Options{Logger: logger, ReadyTimeout: serverReadyTimeout, MaxDraining: -1,
		TakeoverSocket: os.Getenv(envTakeover), TakeoverFrom: os.Getenv(envTakeover)})
	if err != nil {
		return fail(err)
	}
	m.note(markNew)
	defer upg.Stop()
	upg.OnCommit(func(context.Context, int) { upgMarks.note(markReadySeen) })
	ln, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	srv, err := newHTTPServer()
	if err != nil {
		return fail(err)
	}
	ready := serverEvent{Event: "ready", Addr: ln.Addr().String()}
	// The TLS listener is the second one: molt matches two listeners on
	// ":0" in the order they were created.
	var tlsLn net.Listener
	if srv.TLSConfig != nil {
		if tlsLn, err = upg.Listen("tcp", "127.0.0.1:0"); err != nil {
			return fail(err)
		}
		ready.TLSAddr = tlsLn.Addr().String()
	}
	m.note(markListened)
	ds := drain.NewHTTPServer(srv)
	served := make(chan error, 2)
	fa := newFirstAccept(upg.Generation())
	ln = fa.wrap(ln)
	go func() { served <- ds.Serve(ln) }()
	if tlsLn != nil {
		// drain serves TLS through tls.NewListener (see NewHTTPServer).
		go func() { served <- ds.Serve(tls.NewListener(fa.wrap(tlsLn), srv.TLSConfig)) }()
	}
	m.note(markReadyCall)
	if err := upg.Ready(); err != nil {
		return fail(fmt.Errorf("ready: %w", err))
	}
	m.note(markReady)
	gen := upg.Generation()
	ready.Gen = gen
	if gen > 1 {
		ready.Marks = m.take()
	}
	emit(ready)

	end := generation.Run(upg, ds, sigs, served, upgrade, serverDrainTimeout)
	e := serverEvent{Event: "exit", Gen: gen, Reason: end.Reason, DrainUS: max(1, end.Drain.Microseconds())}
	if end.DrainErr != nil {
		e.Err = end.DrainErr.Error()
		emit(e)
		return 1
	}
	emit(e)
	return 0
}

// upgMarks records the moments of the running upgrade that the old
// generation sees; upgrade reports and resets them.
var upgMarks *marks

// upgrade runs one upgrade and reports it.
func upgrade(upg *molt.Upgrader) {
	ctx, cancel := context.WithTimeout(context.Background(), serverReadyTimeout+5*time.Second)
	defer cancel()
	upgMarks.note(markUpgradeCall)
	start := time.Now()
	err := upg.Upgrade(ctx)
	e := serverEvent{Event: "upgrade", Gen: upg.Generation(), OK: err == nil, TookUS: max(1, time.Since(start).Microseconds())}
	if err != nil {
		e.Err = err.Error()
	}
	e.Marks = upgMarks.take()
	emit(e)
}
