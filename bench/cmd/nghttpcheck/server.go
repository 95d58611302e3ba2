package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/bench/internal/eventlog"
	"github.com/moltgo/molt/bench/internal/generation"
	"github.com/moltgo/molt/drain"
)

const (
	// envRole makes the binary a server generation ("server"); envCertDir
	// names the directory with the driver's certificate (certFile,
	// keyFile). molt passes the environment on to every successor.
	envRole     = "NGHTTPCHECK_ROLE"
	envCertDir  = "NGHTTPCHECK_CERT_DIR"
	envTakeover = "NGHTTPCHECK_TAKEOVER" // the takeover socket, with -takeover
	certFile    = "cert.pem"
	keyFile     = "key.pem"

	// serverDrainTimeout bounds one generation's drain; serverReadyTimeout
	// the start of its successor.
	serverDrainTimeout = 20 * time.Second
	serverReadyTimeout = 20 * time.Second
)

// serverEvent is one JSON line a server generation prints on the output
// all generations share with the driver.
type serverEvent struct {
	Event  string `json:"event"` // "ready", "upgrade", "exit" or "error"
	PID    int    `json:"pid"`
	Gen    uint64 `json:"gen"`
	H2C    string `json:"h2c,omitempty"`    // ready: the cleartext listener (HTTP/1.1 and h2c)
	TLS    string `json:"tls,omitempty"`    // ready: the TLS listener (ALPN h2, http/1.1)
	OK     bool   `json:"ok,omitempty"`     // upgrade
	Err    string `json:"err,omitempty"`    // upgrade, exit (the drain's error), error
	Reason string `json:"reason,omitempty"` // exit
}

func eventName(e serverEvent) string { return e.Event }

func emit(e serverEvent) {
	e.PID = os.Getpid()
	eventlog.Emit(e)
}

func fail(err error) int {
	emit(serverEvent{Event: "error", Err: err.Error()})
	return 1
}

// runServer plays one generation of the molt service under test and
// returns its exit status.
func runServer() int {
	// First of all: SIGHUP's default action would kill the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).
		With("pid", os.Getpid())
	upg, err := molt.New(molt.Options{Logger: logger, ReadyTimeout: serverReadyTimeout,
		TakeoverSocket: os.Getenv(envTakeover), TakeoverFrom: os.Getenv(envTakeover)})
	if err != nil {
		return fail(err)
	}
	defer upg.Stop()
	dir := os.Getenv(envCertDir)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile))
	if err != nil {
		return fail(err)
	}
	// Both listeners are ":0": molt matches them to the inherited ones in
	// the order they are created, so the order must never change.
	plain, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	raw, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	// drain serves TLS from a tls.NewListener wrapping molt's listener:
	// the TCP socket moves between generations, each TLS session stays in
	// the process that made it.
	secure := tls.NewListener(raw, &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	})

	ds := drain.NewHTTPServer(newHTTPServer())
	// Both Serve loops report here; the first end stops the generation.
	served := make(chan error, 2)
	go func() { served <- ds.Serve(plain) }()
	go func() { served <- ds.Serve(secure) }()
	if err := upg.Ready(); err != nil {
		return fail(fmt.Errorf("ready: %w", err))
	}
	gen := upg.Generation()
	emit(serverEvent{Event: "ready", Gen: gen, H2C: plain.Addr().String(), TLS: raw.Addr().String()})

	end := generation.Run(upg, ds, sigs, served, upgrade, serverDrainTimeout)
	e := serverEvent{Event: "exit", Gen: gen, Reason: end.Reason}
	if end.DrainErr != nil {
		e.Err = end.DrainErr.Error()
		emit(e)
		return 1
	}
	emit(e)
	return 0
}

// newHTTPServer serves GET / with the generation's PID over HTTP/1.1, h2c
// and HTTP/2 over TLS. The answer is tiny so that nghttp's streams, not
// the bodies, are what the run is made of.
func newHTTPServer() *http.Server {
	pid := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, pid)
	})
	srv := &http.Server{
		Handler:           mux,
		Protocols:         new(http.Protocols),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(os.Stderr, fmt.Sprintf("nghttpcheck server (pid %d): ", os.Getpid()), 0),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	return srv
}

// upgrade runs one upgrade and reports it.
func upgrade(upg *molt.Upgrader) {
	ctx, cancel := context.WithTimeout(context.Background(), serverReadyTimeout+5*time.Second)
	defer cancel()
	err := upg.Upgrade(ctx)
	e := serverEvent{Event: "upgrade", Gen: upg.Generation(), OK: err == nil}
	if err != nil {
		e.Err = err.Error()
	}
	emit(e)
}
