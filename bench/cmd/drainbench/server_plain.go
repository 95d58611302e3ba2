package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// runPlainServer plays one process of a service without an upgrade
// library, on the address the driver reserved: it serves until SIGTERM,
// then shuts down gracefully (`server.Shutdown`) and exits. The driver
// replaces it by starting another such process, after it exited (naive)
// or, with reusePort, before it is told to stop (SO_REUSEPORT overlap).
func runPlainServer(reusePort bool) int {
	gen := genFromEnv()
	terminate := make(chan os.Signal, 1)
	signal.Notify(terminate, syscall.SIGTERM, syscall.SIGINT)
	addr := os.Getenv(envAddr)
	if addr == "" {
		return fail(fmt.Errorf("%s is not set", envAddr))
	}
	var lc net.ListenConfig
	if reusePort {
		lc.Control = setReusePort
	}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return fail(fmt.Errorf("listen: %w", err))
	}
	server, err := newHTTPServer()
	if err != nil {
		return fail(err)
	}
	ready := serverEvent{Event: "ready", Gen: gen, Addr: ln.Addr().String()}
	fa := newFirstAccept(gen)
	serve := func(ln net.Listener, tls bool) { serveNetHTTP(server, ln, tls, "plain") }
	if server.TLSConfig != nil {
		tlsAddr := os.Getenv(envTLSAddr)
		if tlsAddr == "" {
			return fail(fmt.Errorf("%s is not set", envTLSAddr))
		}
		tlsLn, err := lc.Listen(context.Background(), "tcp", tlsAddr)
		if err != nil {
			return fail(fmt.Errorf("listen (TLS): %w", err))
		}
		ready.TLSAddr = tlsLn.Addr().String()
		go serve(fa.wrap(tlsLn), true)
	}
	go serve(fa.wrap(ln), false)
	emit(ready)

	s := <-terminate
	ctx, cancel := context.WithTimeout(context.Background(), serverDrainTimeout)
	defer cancel()
	start := time.Now()
	err = server.Shutdown(ctx)
	e := serverEvent{Event: "exit", Gen: gen, Reason: "signal " + s.String(), DrainUS: max(1, time.Since(start).Microseconds())}
	if err != nil {
		e.Err = err.Error()
	}
	emit(e)
	if err != nil {
		return 1
	}
	return 0
}
