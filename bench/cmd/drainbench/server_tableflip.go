package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

// runTableflipServer plays one generation of a tableflip service. Its
// upgrade, listen, serve and shutdown steps are those of tableflip's own
// net/http example (http_example_test.go in v1.2.3): Upgrade on SIGHUP,
// Listen before Ready, `<-upg.Exit()`, a 30 s deadline, then
// `server.Shutdown(context.Background())`. The additions are for the
// benchmark only: the same handlers and server settings as every other
// system, the event lines, the generation number for the successor, and
// SIGTERM to end the run.
func runTableflipServer() int {
	m := newMarks() // the benchmark's, as in the molt server (phases.go)
	m.note(markEntered)
	gen := genFromEnv()
	upg, err := tableflip.New(tableflip.Options{})
	if err != nil {
		return fail(err)
	}
	m.note(markNew)
	defer upg.Stop()

	// Do an upgrade on SIGHUP.
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP)
		for range sig {
			// The successor reads its generation from the environment
			// tableflip passes on.
			os.Setenv(envGen, strconv.FormatUint(gen+1, 10))
			start := time.Now()
			err := upg.Upgrade()
			e := serverEvent{Event: "upgrade", Gen: gen, OK: err == nil, TookUS: max(1, time.Since(start).Microseconds()),
				Marks: map[string]int64{markUpgradeCall: start.UnixNano()}}
			if err != nil {
				e.Err = err.Error()
			}
			emit(e)
		}
	}()
	terminate := make(chan os.Signal, 1)
	signal.Notify(terminate, syscall.SIGTERM, syscall.SIGINT)

	// Listen must be called before Ready.
	ln, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(fmt.Errorf("listen: %w", err))
	}
	server, err := newHTTPServer()
	if err != nil {
		return fail(err)
	}
	ready := serverEvent{Event: "ready", Gen: gen, Addr: ln.Addr().String()}
	fa := newFirstAccept(gen)
	serve := func(ln net.Listener, tls bool) { serveNetHTTP(server, ln, tls, "tableflip") }
	if server.TLSConfig != nil {
		// tableflip names an inherited listener by network and address:
		// "tcp4" keeps this one apart from the first.
		tlsLn, err := upg.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return fail(fmt.Errorf("listen (TLS): %w", err))
		}
		ready.TLSAddr = tlsLn.Addr().String()
		go serve(fa.wrap(tlsLn), true)
	}
	m.note(markListened)
	go serve(fa.wrap(ln), false)
	m.note(markReadyCall)
	if err := upg.Ready(); err != nil {
		return fail(fmt.Errorf("ready: %w", err))
	}
	m.note(markReady)
	if gen > 1 {
		ready.Marks = m.take()
	}
	emit(ready)

	reason := "upgraded"
	select {
	case <-upg.Exit():
	case s := <-terminate:
		reason = "signal " + s.String()
		upg.Stop()
	}
	// The example's deadline on exiting after Exit is closed.
	time.AfterFunc(serverDrainTimeout, func() {
		emit(serverEvent{Event: "exit", Gen: gen, Reason: reason, Err: "graceful shutdown timed out"})
		os.Exit(1)
	})
	start := time.Now()
	err = server.Shutdown(context.Background())
	e := serverEvent{Event: "exit", Gen: gen, Reason: reason, DrainUS: max(1, time.Since(start).Microseconds())}
	if err != nil {
		e.Err = err.Error()
	}
	emit(e)
	return 0
}

// genFromEnv returns the generation the driver or the predecessor set in
// the environment (1 when unset).
func genFromEnv() uint64 {
	gen, err := strconv.ParseUint(os.Getenv(envGen), 10, 64)
	if err != nil || gen == 0 {
		return 1
	}
	return gen
}
