// Command molt-systemd-example is the service the unit files of this
// directory run: an HTTP server under molt, connected to systemd with
// package systemd and driven through a control socket (package control).
// `systemctl reload` runs `molt upgrade`, which upgrades it to the binary
// now on disk and fails the reload when the upgrade failed; `systemctl
// stop` drains it, within TimeoutStopSec=.
//
//	go build -o /usr/local/bin/molt-systemd-example ./examples/systemd
//	go build -o /usr/local/bin/molt ./cmd/molt
//	cp examples/systemd/molt-example.service /etc/systemd/system/
//	systemctl daemon-reload && systemctl start molt-example
//	curl localhost:8080; systemctl reload molt-example; curl localhost:8080
//
// It listens on the socket named "http": from a .socket unit
// (FileDescriptorName=http), from the file descriptor store after a
// restart, or on the address in MOLT_EXAMPLE_ADDR (default :8080). Its
// control socket is MOLT_SOCKET, the variable the molt command reads too.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/drain"
	"github.com/moltgo/molt/systemd"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "molt-systemd-example:", err)
		os.Exit(1)
	}
}

func run() error {
	// First of all, before molt.New: the default action of SIGHUP and
	// SIGTERM ends the process at once, without a drain.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	upg, err := molt.New(molt.Options{
		Logger:       logger,
		ReadyTimeout: time.Minute,                       // below molt --timeout in ExecReload=
		PIDFile:      os.Getenv("MOLT_EXAMPLE_PIDFILE"), // for the PIDFile= fallback
		// The blue/green template: offer takeovers on this socket, and
		// take over from whoever serves it at start.
		TakeoverSocket: os.Getenv("MOLT_EXAMPLE_TAKEOVER"),
		TakeoverFrom:   os.Getenv("MOLT_EXAMPLE_TAKEOVER"),
	})
	if err != nil {
		return err
	}
	svc, err := systemd.Attach(upg, systemd.Options{
		FDStore: os.Getenv("MOLT_EXAMPLE_FDSTORE") == "1", // with FileDescriptorStoreMax= in the unit
		Logger:  logger,
	})
	if err != nil {
		upg.Stop()
		return err // a malformed LISTEN_*, NOTIFY_SOCKET or WATCHDOG_*
	}
	// Deferred calls run last first: upg.Stop, then svc.Close.
	defer svc.Close()
	defer upg.Stop()

	// The control socket `molt upgrade` (ExecReload=) talks to; in the
	// unit's RuntimeDirectory=.
	ctl, err := control.Listen(upg, os.Getenv("MOLT_SOCKET"), control.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer ctl.Close() // before upg.Stop

	addr := os.Getenv("MOLT_EXAMPLE_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	ln, err := svc.Listen("http", "tcp", addr)
	if err != nil {
		return err
	}
	pid, gen := os.Getpid(), upg.Generation()
	srv := drain.NewHTTPServer(&http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "generation %d, pid %d\n", gen, pid)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	})
	go srv.Serve(ln)

	if err := upg.Ready(); err != nil { // READY=1 to systemd in generation 1
		return err
	}
	for done := false; !done; {
		select {
		case s := <-sigs:
			if s != syscall.SIGHUP {
				done = true // SIGTERM: systemctl stop
				continue
			}
			// kill -HUP: the same upgrade as `molt upgrade`, without an
			// answer; a failure shows in systemctl status.
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				if err := upg.Upgrade(ctx); err != nil && !errors.Is(err, molt.ErrUpgradeInProgress) {
					logger.Error("upgrade failed; still serving", "err", err)
				}
			}()
		case <-upg.Exit(): // upgraded (or stopped through the control socket)
			done = true
		}
	}

	// Below TimeoutStopSec= (60 s in the units): the drain ends by itself.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	drained := svc.Draining(ctx) // STOPPING=1 on a stop; nothing after a hand-over
	if err := srv.Drain(ctx); err != nil {
		logger.Error("drain", "err", err)
	}
	drained()
	return nil
}
