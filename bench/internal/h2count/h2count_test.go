package h2count_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moltgo/molt/bench/internal/h2count"
	"github.com/moltgo/molt/drain"
	"github.com/moltgo/molt/internal/proctest"
	"github.com/moltgo/molt/internal/testcert"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// testDeadline bounds every wait of these tests; nothing should come
// near it.
const testDeadline = time.Minute

// newServer returns an HTTP/2-only server (h2c, or TLS with the test
// certificate) for h.
func newServer(h http.Handler, tlsOn bool) *http.Server {
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols), ReadHeaderTimeout: testDeadline}
	srv.Protocols.SetUnencryptedHTTP2(true)
	if tlsOn {
		srv.Protocols.SetHTTP2(true)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testcert.Must().TLS}, NextProtos: []string{"h2"}}
	}
	return srv
}

// clientTLS is the client's TLS configuration: it verifies the test
// certificate (nil for h2c).
func clientTLS(tlsOn bool) *tls.Config {
	if !tlsOn {
		return nil
	}
	return &tls.Config{RootCAs: testcert.Must().Pool()}
}

// mux answers GET / with "ok" and POST /echo with 200 if the body has
// the length the client sends, 400 otherwise; it records how many
// handlers ran at once.
func mux(inFlight, maxInFlight *atomic.Int64) http.Handler {
	m := http.NewServeMux()
	track := func() func() {
		n := inFlight.Add(1)
		for {
			old := maxInFlight.Load()
			if n <= old || maxInFlight.CompareAndSwap(old, n) {
				break
			}
		}
		return func() { inFlight.Add(-1) }
	}
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		defer track()()
		io.WriteString(w, "ok")
	})
	m.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		defer track()()
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil || n != int64(len(postBody)) {
			http.Error(w, fmt.Sprintf("read %d bytes: %v", n, err), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, n)
	})
	return m
}

var postBody = []byte(strings.Repeat("x", 1024))

// noClientGoroutines fails t if a goroutine of the client is left: Run
// waits for all of them, so none may be left once it has returned. A
// goroutine whose function has returned can still be listed for a moment
// while the runtime tears it down (its stack shows runtime.goexit1), so
// the check looks again until a generous deadline before it fails.
func noClientGoroutines(t *testing.T) {
	t.Helper()
	var left []string
	if proctest.Until(proctest.Patience, func() bool { left = clientGoroutines(); return len(left) == 0 }) {
		return
	}
	for _, g := range left {
		t.Errorf("a client goroutine is left after Run returned:\n%s", g)
	}
}

// clientGoroutines returns the stacks of the goroutines that run the
// client's code.
func clientGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var left []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "internal/h2count.") {
			left = append(left, g)
		}
	}
	return left
}

// checkClean fails t unless every stream sent was answered.
func checkClean(t *testing.T, c h2count.Counts) {
	t.Helper()
	t.Logf("counts: %v", c)
	if c.Failed() != 0 || c.Aborted() != 0 || c.Sent == 0 || c.Answered != c.Sent {
		t.Errorf("want every stream answered, got %v; first of each cause: %q", c, c.First)
	}
	if !c.Balanced() {
		t.Errorf("not balanced: %v", c)
	}
}

// TestSteady: a steady load against net/http, h2c and TLS, GET and
// POST: every stream is answered, and the server's stream limit is kept.
func TestSteady(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tls   bool
		post  bool
		limit int // the server's MaxConcurrentStreams; 0: its default
	}{
		{name: "h2c-get"},
		{name: "h2c-post", post: true},
		{name: "h2c-limit", limit: 3},
		{name: "tls-get", tls: true},
		{name: "tls-post", tls: true, post: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var inFlight, maxInFlight atomic.Int64
			srv := newServer(mux(&inFlight, &maxInFlight), tc.tls)
			if tc.limit > 0 {
				srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: tc.limit}
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				if tc.tls {
					srv.ServeTLS(ln, "", "")
				} else {
					srv.Serve(ln)
				}
			}()
			defer srv.Close()

			const total = 3000
			cfg := h2count.Config{Addr: ln.Addr().String(), TLS: clientTLS(tc.tls), Conns: 4, Streams: 8, MaxStreams: total}
			if tc.limit > 0 {
				cfg.Conns = 1 // the limit is per connection
			}
			if tc.post {
				cfg.Method, cfg.Path, cfg.Body = "POST", "/echo", postBody
			}
			var results atomic.Int64
			cfg.OnStream = func(r h2count.Result) {
				if r.Err == nil && r.Latency > 0 && !r.Start.IsZero() {
					results.Add(1)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
			defer cancel()
			c, err := h2count.Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			noClientGoroutines(t)
			checkClean(t, c)
			if c.Sent != total || results.Load() != total {
				t.Errorf("sent %d, OnStream saw %d answered; want %d", c.Sent, results.Load(), total)
			}
			if c.DialErrors() != 0 || c.GoAways != 0 {
				t.Errorf("dial errors %d, GOAWAYs %d: want none", c.DialErrors(), c.GoAways)
			}
			if tc.limit > 0 && maxInFlight.Load() > int64(tc.limit) {
				t.Errorf("%d handlers at once, above the server's limit %d", maxInFlight.Load(), tc.limit)
			}
		})
	}
}

// chanListener is a listener fed by a dispatcher: it lets two servers
// take turns on one port, as a generation and its successor do.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// deliver passes c to the listener's Accept, or closes c if the listener
// is closed.
func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		c.Close()
	}
}

// progress counts answered streams and lets a test wait for a number.
type progress struct {
	answered atomic.Int64
	tick     chan struct{}
}

func newProgress() *progress { return &progress{tick: make(chan struct{}, 1)} }

func (p *progress) onStream(r h2count.Result) {
	if r.Err == nil {
		p.answered.Add(1)
	}
	select {
	case p.tick <- struct{}{}:
	default:
	}
}

// wait waits until n streams were answered.
func (p *progress) wait(t *testing.T, n int64, deadline <-chan time.Time) {
	t.Helper()
	for p.answered.Load() < n {
		select {
		case <-p.tick:
		case <-deadline:
			t.Fatalf("only %d of %d streams answered by the deadline", p.answered.Load(), n)
		}
	}
}

// TestThroughDrain: the client runs while drain.HTTPServer drains the
// server that has its connections and a second one takes the port over:
// no stream fails, and the client did see GOAWAYs.
func TestThroughDrain(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		name := "h2c"
		if tlsOn {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			deadline := time.After(testDeadline)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			old, next := newChanListener(ln.Addr()), newChanListener(ln.Addr())
			var cur atomic.Pointer[chanListener]
			cur.Store(old)
			dispatched := make(chan struct{})
			go func() {
				defer close(dispatched)
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					cur.Load().deliver(c)
				}
			}()
			serve := func(l net.Listener) (*drain.HTTPServer, chan error) {
				var inFlight, maxInFlight atomic.Int64
				srv := newServer(mux(&inFlight, &maxInFlight), tlsOn)
				ds := drain.NewHTTPServer(srv)
				if tlsOn {
					l = tls.NewListener(l, srv.TLSConfig)
				}
				served := make(chan error, 1)
				go func() { served <- ds.Serve(l) }()
				return ds, served
			}
			dsOld, servedOld := serve(old)
			dsNext, servedNext := serve(next)

			p := newProgress()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ran := make(chan h2count.Counts, 1)
			go func() {
				c, err := h2count.Run(ctx, h2count.Config{
					Addr: ln.Addr().String(), TLS: clientTLS(tlsOn), Conns: 4, Streams: 16,
					StopGrace: 10 * time.Second, OnStream: p.onStream,
				})
				if err != nil {
					t.Error(err)
				}
				ran <- c
			}()

			p.wait(t, 500, deadline)
			cur.Store(next) // new connections go to the successor
			dctx, dcancel := context.WithTimeout(context.Background(), testDeadline)
			defer dcancel()
			if err := dsOld.Drain(dctx); err != nil {
				t.Errorf("drain: %v", err)
			}
			p.wait(t, p.answered.Load()+500, deadline)
			cancel()
			var c h2count.Counts
			select {
			case c = <-ran:
			case <-deadline:
				t.Fatal("Run did not return")
			}
			noClientGoroutines(t)
			checkClean(t, c)
			if c.GoAways == 0 {
				t.Error("the client saw no GOAWAY: the drain did not reach it")
			}

			if err := dsNext.Drain(dctx); err != nil {
				t.Errorf("drain of the successor: %v", err)
			}
			ln.Close()
			<-dispatched
			for _, served := range []chan error{servedOld, servedNext} {
				if err := <-served; err != nil {
					t.Errorf("serve: %v", err)
				}
			}
		})
	}
}

// rawConn is the server side of one connection of a tiny HTTP/2 server
// written for these tests: it says exactly what it sends.
type rawConn struct {
	nc  net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

// acceptRaw accepts one connection on ln, closes ln, reads the client
// preface and sends the server's SETTINGS.
func acceptRaw(ln net.Listener) (*rawConn, error) {
	nc, err := ln.Accept()
	ln.Close() // one connection only: the client's next dials fail
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(testDeadline))
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(nc, pre); err != nil || string(pre) != http2.ClientPreface {
		nc.Close()
		return nil, fmt.Errorf("client preface %q: %v", pre, err)
	}
	r := &rawConn{nc: nc, fr: http2.NewFramer(nc, nc)}
	r.enc = hpack.NewEncoder(&r.buf)
	if err := r.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100}); err != nil {
		nc.Close()
		return nil, err
	}
	return r, nil
}

// next returns the client's next frame other than SETTINGS (acknowledged
// here) and WINDOW_UPDATE.
func (r *rawConn) next() (http2.Frame, error) {
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := r.fr.WriteSettingsAck(); err != nil {
					return nil, err
				}
			}
		case *http2.WindowUpdateFrame:
		default:
			return f, nil
		}
	}
}

// respond sends a complete response without a body.
func (r *rawConn) respond(id uint32, status int) error {
	r.buf.Reset()
	r.enc.WriteField(hpack.HeaderField{Name: ":status", Value: fmt.Sprint(status)})
	return r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.buf.Bytes(), EndStream: true, EndHeaders: true})
}

// finish half-closes the connection (the client reads everything sent
// before), then reads until the client closes its side.
func (r *rawConn) finish() {
	if tc, ok := r.nc.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	io.Copy(io.Discard, r.nc)
	r.nc.Close()
}

// rawRun runs the client against serve, which gets the one connection
// the raw server accepts; stop ends the client. It returns the counts,
// once serve has returned too.
func rawRun(t *testing.T, cfg h2count.Config, serve func(r *rawConn, stop func()) error) h2count.Counts {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		r, err := acceptRaw(ln)
		if err != nil {
			served <- err
			return
		}
		served <- serve(r, cancel)
	}()
	cfg.Addr = ln.Addr().String()
	if cfg.StopGrace == 0 {
		cfg.StopGrace = testDeadline / 2 // what the server sent before stop arrives in full
	}
	c, err := h2count.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Errorf("raw server: %v", err)
	}
	if ctx.Err() == context.DeadlineExceeded {
		t.Error("the test's deadline ended the run")
	}
	noClientGoroutines(t)
	t.Logf("counts: %v", c)
	for cause := range h2count.NumCauses {
		if c.First[cause] != "" {
			t.Logf("first %v: %s", cause, c.First[cause])
		}
	}
	if !c.Balanced() {
		t.Errorf("not balanced: %v", c)
	}
	return c
}

// headersSeen reads frames until n HEADERS arrived and returns their
// stream ids.
func headersSeen(r *rawConn, n int) ([]uint32, error) {
	var ids []uint32
	for len(ids) < n {
		f, err := r.next()
		if err != nil {
			return ids, err
		}
		if h, ok := f.(*http2.HeadersFrame); ok {
			ids = append(ids, h.StreamID)
		}
	}
	return ids, nil
}

// TestSeesLoss: a server that answers streams 1 (200), 3 (503) and 5
// (RST_STREAM), then sends a GOAWAY with last stream id 5 at once and
// closes: every stream above 5 the client sent is a failure, and each of
// the others has its cause.
func TestSeesLoss(t *testing.T) {
	const last = 5
	var above atomic.Int64 // streams above last the server read
	c := rawRun(t, h2count.Config{Conns: 1, Streams: 8},
		func(r *rawConn, stop func()) error {
			defer r.finish()
			defer stop() // once the GOAWAY is out, the client has seen it before its next dial
			ids, err := headersSeen(r, 8)
			if err != nil {
				return err
			}
			for _, id := range ids {
				switch id {
				case 1:
					err = r.respond(id, 200)
				case 3:
					err = r.respond(id, 503)
				case 5:
					err = r.fr.WriteRSTStream(id, http2.ErrCodeInternal)
				default:
					above.Add(1)
				}
				if err != nil {
					return err
				}
			}
			return r.fr.WriteGoAway(last, http2.ErrCodeNo, nil)
		})
	if c.Answered != 1 || c.ByCause[h2count.Status] != 1 || c.ByCause[h2count.Reset] != 1 {
		t.Errorf("want stream 1 answered, 3 failed by status, 5 reset; got %v", c)
	}
	lost := c.ByCause[h2count.GoAwayAboveLast]
	if lost < above.Load() || lost < 5 || lost != c.Sent-3 {
		t.Errorf("%d streams above the last stream id %d failed; want every stream sent above it (%d sent, the server read %d of them)",
			lost, last, c.Sent, above.Load())
	}
	if c.Failed() != c.Sent-1 || c.Aborted() != 0 || c.GoAways != 1 {
		t.Errorf("want every stream but one failed, none aborted, one GOAWAY; got %v", c)
	}
}

// TestTwoPhase: the server's first GOAWAY refuses nothing and comes with
// a PING; no stream may follow the PING's ACK, and after the final
// GOAWAY (the last stream read) and the answers every stream succeeded.
func TestTwoPhase(t *testing.T) {
	c := rawRun(t, h2count.Config{Conns: 1, Streams: 8},
		func(r *rawConn, stop func()) error {
			defer r.finish()
			defer stop()
			open, err := headersSeen(r, 8)
			if err != nil {
				return err
			}
			if err := r.fr.WriteGoAway(1<<31-1, http2.ErrCodeNo, nil); err != nil {
				return err
			}
			if err := r.fr.WritePing(false, [8]byte{'m', 'o', 'l', 't'}); err != nil {
				return err
			}
			for acked := false; !acked; {
				f, err := r.next()
				if err != nil {
					return err
				}
				switch f := f.(type) {
				case *http2.HeadersFrame:
					open = append(open, f.StreamID)
				case *http2.PingFrame:
					acked = f.IsAck() && f.Data == [8]byte{'m', 'o', 'l', 't'}
				}
			}
			if err := r.fr.WriteGoAway(open[len(open)-1], http2.ErrCodeNo, nil); err != nil {
				return err
			}
			for _, id := range open {
				if err := r.respond(id, 200); err != nil {
					return err
				}
			}
			// Nothing but the client's close may follow.
			for {
				f, err := r.next()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				if h, ok := f.(*http2.HeadersFrame); ok {
					return fmt.Errorf("stream %d opened after the PING's ACK", h.StreamID)
				}
			}
		})
	checkClean(t, c)
	if c.GoAways != 2 {
		t.Errorf("%d GOAWAYs read, want 2", c.GoAways)
	}
}

// TestClosed: the server closes the connection with streams open.
func TestClosed(t *testing.T) {
	c := rawRun(t, h2count.Config{Conns: 1, Streams: 4},
		func(r *rawConn, stop func()) error {
			defer stop()
			if _, err := headersSeen(r, 4); err != nil {
				return err
			}
			return r.nc.Close()
		})
	if c.Sent < 4 || c.ByCause[h2count.Closed] != c.Sent || c.Failed() != c.Sent {
		t.Errorf("want every stream failed as closed; got %v", c)
	}
}

// TestTimeout: a server that never answers; the client gives up on each
// stream after the stream timeout, resets it, and ends once the budget
// is spent.
func TestTimeout(t *testing.T) {
	resets := make(chan uint32, 8)
	c := rawRun(t, h2count.Config{Conns: 1, Streams: 2, MaxStreams: 4, StreamTimeout: 200 * time.Millisecond},
		func(r *rawConn, stop func()) error {
			defer r.nc.Close()
			for {
				f, err := r.next()
				if err != nil {
					return nil // the client closed
				}
				if f, ok := f.(*http2.RSTStreamFrame); ok && f.ErrCode == http2.ErrCodeCancel {
					resets <- f.StreamID
				}
			}
		})
	if c.Sent != 4 || c.ByCause[h2count.Timeout] != 4 || c.Failed() != 4 {
		t.Errorf("want 4 streams sent and timed out; got %v", c)
	}
	close(resets)
	n := 0
	for range resets {
		n++
	}
	if n != 4 {
		t.Errorf("the server read %d RST_STREAM(CANCEL), want 4", n)
	}
}

// TestAbortedAtStop: streams still open when the stop's grace runs out
// are aborted, not failed.
func TestAbortedAtStop(t *testing.T) {
	c := rawRun(t, h2count.Config{Conns: 1, Streams: 4, StopGrace: 100 * time.Millisecond},
		func(r *rawConn, stop func()) error {
			defer r.nc.Close()
			if _, err := headersSeen(r, 4); err != nil {
				return err
			}
			stop()
			io.Copy(io.Discard, r.nc) // until the client closes
			return nil
		})
	if c.Sent != 4 || c.Aborted() != 4 || c.Failed() != 0 {
		t.Errorf("want 4 streams sent and aborted at the stop, none failed; got %v", c)
	}
}

// TestDialErrors: a refused connection is a dial error, not a stream.
func TestDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	cfg := h2count.Config{Addr: addr, Conns: 2,
		OnStream:    func(h2count.Result) { t.Error("a stream on a refused connection") },
		OnDialError: func(*h2count.Failure) { cancel() },
	}
	c, err := h2count.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	noClientGoroutines(t)
	t.Logf("counts: %v; first dial error: %s", c, c.First[h2count.Dial])
	if c.Sent != 0 || c.Failed() != 0 || c.DialErrors() == 0 {
		t.Errorf("want dial errors only; got %v", c)
	}
}
