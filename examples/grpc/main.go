// Command grpc is an example: a gRPC server under molt. It upgrades on
// SIGHUP and, once a successor took over, drains with GracefulStop (in-
// flight RPCs complete, clients get GOAWAY and reconnect to the successor),
// bounded by a deadline. It serves the standard health service, so any
// gRPC health client can talk to it.
//
// It is its own module so that gRPC never becomes a dependency of molt.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/moltgo/molt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "address to serve on")
	drainTimeout := flag.Duration("drain", 30*time.Second, "longest time to finish in-flight RPCs after an upgrade")
	flag.Parse()
	if err := run(*addr, *drainTimeout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(addr string, drainTimeout time.Duration) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	upg, err := molt.New(molt.Options{Logger: log})
	if err != nil {
		return err
	}
	defer upg.Stop()
	ln, err := upg.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	if err := upg.Ready(); err != nil {
		return err
	}
	fmt.Printf("ready pid=%d gen=%d addr=%s\n", os.Getpid(), upg.Generation(), ln.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range sig {
			if s != syscall.SIGHUP {
				upg.Stop()
				return
			}
			if err := upg.Upgrade(context.Background()); err != nil {
				log.Error("upgrade failed", "err", err)
			}
		}
	}()

	<-upg.Exit()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(drainTimeout):
		srv.Stop() // the deadline: cut what is left
	}
	fmt.Printf("exit pid=%d reason=%s\n", os.Getpid(), upg.Reason())
	return nil
}
