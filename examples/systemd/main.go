// Command molt-systemd-example is the service the unit files of this
// directory run: an HTTP server under molt, connected to systemd with
// package systemd. `systemctl reload` upgrades it to the binary now on
// disk; `systemctl stop` drains it.
//
//	go build -o /usr/local/bin/molt-systemd-example ./examples/systemd
//	cp examples/systemd/molt-example.service /etc/systemd/system/
//	systemctl daemon-reload && systemctl start molt-example
//	curl localhost:8080; systemctl reload molt-example; curl localhost:8080
//
// It listens on the socket named "http": from a .socket unit
// (FileDescriptorName=http), from the file descriptor store after a
// restart, or on the address in MOLT_EXAMPLE_ADDR (default :8080).
package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/drain"
	"github.com/moltgo/molt/systemd"
)

func main() {
	// Before anything else: SIGHUP's default action would kill the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	upg, err := molt.New(molt.Options{
		Logger:       logger,
		ReadyTimeout: time.Minute,
		PIDFile:      os.Getenv("MOLT_EXAMPLE_PIDFILE"), // for the PIDFile= fallback
	})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	svc, err := systemd.Attach(upg, systemd.Options{
		FDStore: os.Getenv("MOLT_EXAMPLE_FDSTORE") == "1", // with FileDescriptorStoreMax= in the unit
		Logger:  logger,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()

	addr := os.Getenv("MOLT_EXAMPLE_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	ln, err := svc.Listen("http", "tcp", addr)
	if err != nil {
		log.Fatal(err)
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
		log.Fatal(err)
	}
	for done := false; !done; {
		select {
		case s := <-sigs:
			if s != syscall.SIGHUP {
				done = true
				continue
			}
			// systemctl reload: the successor is announced to systemd by
			// the Service; a failure shows in systemctl status.
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				if err := upg.Upgrade(ctx); err != nil {
					logger.Error("upgrade failed; still serving", "err", err)
				}
			}()
		case <-upg.Exit():
			done = true
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	drained := svc.Draining(ctx) // STOPPING=1 on a stop; nothing after a hand-over
	if err := srv.Drain(ctx); err != nil {
		logger.Error("drain", "err", err)
	}
	drained()
}
