//go:build unix

package quic_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/proctest"
	"github.com/moltgo/molt/internal/testcert"
	moltquic "github.com/moltgo/molt/quic"
	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// The test binary plays the HTTP/3 server of the multi-process tests:
// every generation is this binary in role "server", started by the test
// (generation 1) or by the previous generation (Upgrade on SIGHUP).
const envRole = "MOLTQUIC_TEST_ROLE"

// Settings of a server, in its environment (successors inherit them).
const (
	envAddr     = "MOLTQUIC_TEST_ADDR"      // the UDP address generation 1 binds
	envForward  = "MOLTQUIC_TEST_FORWARD"   // "1": this package; "0": molt's plain ListenPacket
	envDrain    = "MOLTQUIC_TEST_DRAIN"     // how long a draining generation waits for its requests
	envProb     = "MOLTQUIC_TEST_PROBATION" // Options.Probation
	envCrash    = "MOLTQUIC_TEST_CRASH"     // the generation that exits 3 soon after its Ready
	envTakeover = "MOLTQUIC_TEST_TAKEOVER"  // Options.TakeoverSocket
	envTake     = "MOLTQUIC_TEST_TAKE"      // "1": take over through it (Options.TakeoverFrom)
)

func TestMain(m *testing.M) {
	proctest.Dispatch(envRole, map[string]func() int{"server": serverRole})
	os.Exit(m.Run())
}

func serverTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{testcert.Must().TLS},
		NextProtos:   []string{http3.NextProtoH3},
	}
}

// serverRole serves HTTP/3 until SIGTERM, upgrading on SIGHUP. Its events:
//
//	ready pid= gen=          it serves
//	upgrade-failed gen= err= an upgrade it started failed
//	exited pid= gen= received= forwarded= dropped= from_successor= max_older= err=
func serverRole() int {
	gen := uint64(0)
	fail := func(what string, err error) int {
		proctest.Say("exited pid=%d gen=%d err=%q", os.Getpid(), gen, what+": "+err.Error())
		return 1
	}
	probation, _ := time.ParseDuration(os.Getenv(envProb))
	opts := molt.Options{ReadyTimeout: time.Minute, MaxDraining: -1, Probation: probation,
		TakeoverSocket: os.Getenv(envTakeover)}
	if os.Getenv(envTake) == "1" {
		opts.TakeoverFrom = opts.TakeoverSocket
	}
	u, err := molt.New(opts)
	if err != nil {
		return fail("New", err)
	}
	defer u.Stop()
	gen = u.Generation()
	forward := os.Getenv(envForward) == "1"
	drain, _ := time.ParseDuration(os.Getenv(envDrain))
	if drain == 0 {
		drain = 30 * time.Second
	}

	var (
		older int
		tr    *quicgo.Transport
		mq    *moltquic.PacketConn
		pc    net.PacketConn
	)
	if forward {
		if mq, err = moltquic.ListenPacket(u, "udp", os.Getenv(envAddr)); err != nil {
			return fail("ListenPacket", err)
		}
		mq.SetLogger(slog.New(slog.NewTextHandler(os.Stderr, nil)))
		pc, tr = mq, mq.Transport()
		older = len(mq.Stats().Older) // only ever shrinks from here
	} else {
		if pc, err = u.ListenPacket("udp", os.Getenv(envAddr)); err != nil {
			return fail("ListenPacket", err)
		}
		// the same receive buffer as this package sets, for a fair comparison
		if sc, ok := pc.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<20) })
			}
		}
		tr = &quicgo.Transport{Conn: pc}
	}
	ln, err := tr.ListenEarly(serverTLS(), &quicgo.Config{MaxIdleTimeout: time.Minute})
	if err != nil {
		return fail("Listen", err)
	}
	srv := &http3.Server{Handler: handler(gen)}
	go srv.ServeListener(ln)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
	if err := u.Ready(); err != nil {
		return fail("Ready", err)
	}
	proctest.Say("ready pid=%d gen=%d addr=%s", os.Getpid(), gen, pc.LocalAddr())
	if os.Getenv(envCrash) == strconv.FormatUint(gen, 10) {
		// a successor that dies on its first requests (its parent has it
		// on probation and takes the service back)
		time.AfterFunc(300*time.Millisecond, func() { os.Exit(3) })
	}
serve:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGTERM {
				break serve
			}
			go func() {
				if err := u.Upgrade(context.Background()); err != nil && !errors.Is(err, molt.ErrUpgraded) {
					proctest.Say("upgrade-failed gen=%d err=%q", gen, err.Error())
				}
			}()
		case <-u.Exit():
			break serve
		}
	}
	// Drain: GOAWAY on every connection, then wait for their requests.
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	serr := moltquic.DrainHTTP3(ctx, srv, ln)
	cancel()
	tr.Close()
	var st moltquic.Stats
	if mq != nil {
		st = mq.Stats()
	}
	pc.Close()
	msg := ""
	if serr != nil {
		msg = "shutdown: " + serr.Error()
	}
	proctest.Say("exited pid=%d gen=%d received=%d forwarded=%d dropped=%d from_successor=%d max_older=%d err=%q",
		os.Getpid(), gen, st.Received, st.Forwarded, st.ForwardDropped, st.FromSuccessor, older, msg)
	return 0
}

// handler answers with the generation that served the request:
//
//	/       at once
//	/slow   after 150 ms (a request in flight at most hand-offs)
//	/stream ten chunks 100 ms apart (a response that outlives a hand-off)
func handler(gen uint64) http.Handler {
	mux := http.NewServeMux()
	body := "gen=" + strconv.FormatUint(gen, 10) + "\n"
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, body)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(150 * time.Millisecond)
		io.WriteString(w, body)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		for i := range 10 {
			fmt.Fprintf(w, "chunk %d\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
		io.WriteString(w, body)
	})
	return mux
}
