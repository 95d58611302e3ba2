package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
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
	// serverReadyTimeout bounds the start of a successor, serverDrainTimeout
	// one generation's drain.
	serverReadyTimeout = 30 * time.Second
	serverDrainTimeout = 30 * time.Second
	// statsPath is where a server answers with its own measurements.
	statsPath = "/debug/soak"
)

// serverEvent is one JSON line a server process prints on the pipe all of
// them share with the driver. Times are Unix nanoseconds of the server's
// clock (the driver runs on the same machine).
type serverEvent struct {
	// "ready", "upgrade", "init-failed" (a successor failing on purpose),
	// "exit" or "error".
	Event        string `json:"event"`
	PID          int    `json:"pid"`
	Gen          uint64 `json:"gen"`
	UnixNS       int64  `json:"t"`
	Addr         string `json:"addr,omitempty"`          // ready
	OK           bool   `json:"ok,omitempty"`            // upgrade
	SuccessorPID int    `json:"successor_pid,omitempty"` // upgrade: the successor started, if any
	Err          string `json:"err,omitempty"`           // upgrade, exit (the drain's error), error
	DrainUS      int64  `json:"drain_us,omitempty"`      // exit
	Reason       string `json:"reason,omitempty"`        // exit
}

// emit stamps e with this process and the time and prints it.
func emit(e serverEvent) {
	e.PID = os.Getpid()
	e.UnixNS = time.Now().UnixNano()
	eventlog.Emit(e)
}

// runServer plays one server generation and returns its exit status.
func runServer() int {
	// First of all: SIGHUP's default action would kill the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)

	logger := slog.New(quietHandler{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})})
	fail := func(err error) int {
		emit(serverEvent{Event: "error", Err: err.Error()})
		return 1
	}
	upg, err := molt.New(molt.Options{Logger: logger, ReadyTimeout: serverReadyTimeout})
	if err != nil {
		return fail(err)
	}
	defer upg.Stop()
	ln, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	if upg.HasParent() && failFlagSet() {
		// The failure the driver asked for: init gives up after it received
		// the inventory, the way log.Fatal would, without Stop. The parent
		// must see exit status 1, reap this process and serve on.
		emit(serverEvent{Event: "init-failed", Gen: upg.Generation()})
		os.Exit(1)
	}
	srv := &http.Server{
		Handler:           serverMux(upg.Generation()),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(os.Stderr, fmt.Sprintf("soak server (pid %d): ", os.Getpid()), 0),
	}
	ds := drain.NewHTTPServer(srv)
	served := make(chan error, 1)
	go func() { served <- ds.Serve(ln) }()
	if err := upg.Ready(); err != nil {
		return fail(fmt.Errorf("ready: %w", err))
	}
	gen := upg.Generation()
	emit(serverEvent{Event: "ready", Gen: gen, Addr: ln.Addr().String()})

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

// quietHandler drops molt's record of a failed upgrade: the server reports
// every upgrade as an event, and the driver tells the failures it asked
// for from the others, which it reports.
type quietHandler struct{ slog.Handler }

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "molt: upgrade failed" {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(attrs)}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name)}
}

// failFlagSet reports whether the driver's flag file exists: this
// successor is to fail during init.
func failFlagSet() bool {
	path := os.Getenv(envFailFile)
	if path == "" {
		return false
	}
	_, err := os.Stat(path)
	return err == nil
}

// upgrade runs one upgrade and reports it.
func upgrade(upg *molt.Upgrader) {
	ctx, cancel := context.WithTimeout(context.Background(), serverReadyTimeout+5*time.Second)
	defer cancel()
	err := upg.Upgrade(ctx)
	e := serverEvent{Event: "upgrade", Gen: upg.Generation(), OK: err == nil}
	if st := upg.Stats(); st.LastUpgrade != nil {
		e.SuccessorPID = st.LastUpgrade.SuccessorPID
	}
	if ce := (*molt.ChildError)(nil); errors.As(err, &ce) {
		e.SuccessorPID = ce.PID
	}
	if err != nil {
		e.Err = err.Error()
	}
	emit(e)
}

// serverMux serves the load's endpoints and the measurements.
func serverMux(gen uint64) *http.ServeMux {
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
	mux.HandleFunc("GET "+statsPath, func(w http.ResponseWriter, r *http.Request) {
		m, err := measure(gen)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(m)
	})
	// Anything else is a request the clients never send: a sign that the
	// server read a request from the wrong place in the byte stream.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, fmt.Sprintf("soak: unexpected request %.40q %.40q", r.Method, r.URL.Path), http.StatusBadRequest)
	})
	return mux
}
