package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/drain"
)

const (
	// readyTimeout bounds the start of a successor (molt.Options.ReadyTimeout).
	readyTimeout = 30 * time.Second
	// upgradeTimeout bounds one Upgrade call.
	upgradeTimeout = time.Minute
	// drainTimeout bounds the drain of a generation that is done.
	drainTimeout = 30 * time.Second
)

// The events a server prints, one JSON object per line.
type (
	readyEvent struct {
		Event string `json:"event"` // "ready"
		PID   int    `json:"pid"`
		Gen   uint64 `json:"gen"`
		Addr  string `json:"addr"`
	}
	upgradeEvent struct {
		Event      string `json:"event"` // "upgrade"
		PID        int    `json:"pid"`
		Gen        uint64 `json:"gen"`
		OK         bool   `json:"ok"`
		Error      string `json:"error"`
		DurationUS int64  `json:"duration_us"`
	}
	exitEvent struct {
		Event      string `json:"event"` // "exit"
		PID        int    `json:"pid"`
		Gen        uint64 `json:"gen"`
		Reason     string `json:"reason"`
		DrainError string `json:"drain_error,omitempty"`
	}
)

var stdoutMu sync.Mutex

// emit prints v as one JSON line with a single write: lines of all the
// generations sharing the pipe never interleave (a pipe write of up to
// PIPE_BUF bytes is atomic).
func emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // the event types always marshal
	}
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

// runServer plays one generation of the HTTP server and returns the exit
// status.
func runServer(addr string) int {
	// Before anything else: SIGHUP's default action would kill the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).
		With("pid", os.Getpid())
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "molt-demo server (pid %d): %s\n", os.Getpid(), fmt.Sprintf(format, args...))
		return 1
	}

	u, err := molt.New(molt.Options{Logger: logger, ReadyTimeout: readyTimeout})
	if err != nil {
		return fail("%v", err)
	}
	defer u.Stop()
	ln, err := u.Listen("tcp", addr)
	if err != nil {
		return fail("%v", err)
	}

	pid, gen := os.Getpid(), u.Generation()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pid %d gen %d\n", pid, gen)
	})
	srv := drain.NewHTTPServer(&http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(os.Stderr, fmt.Sprintf("molt-demo server (pid %d): ", pid), 0),
	})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	if err := u.Ready(); err != nil {
		return fail("ready: %v", err)
	}
	emit(readyEvent{Event: "ready", PID: pid, Gen: gen, Addr: ln.Addr().String()})

	var (
		upgrades sync.WaitGroup
		reason   string
		status   int
	)
loop:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGHUP {
				upgrades.Go(func() { upgrade(u, pid, gen) })
				continue
			}
			reason = "signal: " + s.String()
			break loop
		case <-u.Exit():
			reason = u.Reason().String()
			break loop
		case err := <-served:
			if err == nil {
				err = errors.New("listener closed")
			}
			reason, status = "serve: "+err.Error(), 1
			break loop
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	drainErr := srv.Drain(ctx)
	u.Stop() // interrupts an upgrade still running
	upgrades.Wait()
	ev := exitEvent{Event: "exit", PID: pid, Gen: gen, Reason: reason}
	if drainErr != nil {
		ev.DrainError, status = drainErr.Error(), 1
	}
	emit(ev)
	return status
}

// upgrade runs one upgrade and reports it.
func upgrade(u *molt.Upgrader, pid int, gen uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), upgradeTimeout)
	defer cancel()
	start := time.Now()
	err := u.Upgrade(ctx)
	took := time.Since(start)
	ev := upgradeEvent{Event: "upgrade", PID: pid, Gen: gen, OK: err == nil, DurationUS: took.Microseconds()}
	if err != nil {
		ev.Error = err.Error()
	}
	emit(ev)
}
