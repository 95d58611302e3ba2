// Command grpc is an example: a gRPC server under molt. It upgrades on
// SIGHUP and, once a successor took over, drains with GracefulStop (in-
// flight RPCs complete, clients get GOAWAY and reconnect to the successor),
// bounded by a deadline. It serves the standard health service, so any
// gRPC health client can talk to it, and server reflection, so that
// generic tools (ghz, grpcurl) can call it without a .proto file.
//
// Each generation prints a "ready" line once it serves and an "exit" line
// with the number of RPCs it answered; cmd/grpcload reads them to drive
// upgrades under load (see README.md for the measurements).
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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moltgo/molt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
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
	// served counts the unary RPCs this generation answered, so that a load
	// test can check that every generation took part and that the clients'
	// OK count matches what the servers answered.
	var served atomic.Int64
	count := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		served.Add(1)
		return resp, err
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(count))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	reflection.Register(srv)
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
	// GracefulStop is grpc-go's two-phase drain: a GOAWAY that still admits
	// new streams and a PING, then, after the PING's ACK, the GOAWAY with the
	// last stream id; so no stream a client sent before it saw the final
	// GOAWAY goes unanswered. The listener it closes is this generation's
	// copy: the successor keeps accepting on the same socket.
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(drainTimeout):
		srv.Stop() // the deadline: cut what is left
	}
	fmt.Printf("exit pid=%d reason=%s served=%d\n", os.Getpid(), upg.Reason(), served.Load())
	return nil
}
