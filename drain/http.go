package drain

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/moltgo/molt"
)

// newConnGrace is how long a connection that has sent nothing yet may stay
// open during a drain when it cannot be handed over (TLS, or no successor):
// net/http's own Shutdown uses the same five seconds. One that can be
// handed over is handed over, however long it has been quiet.
var newConnGrace = 5 * time.Second // a variable for the tests

// DefaultIdleGrace is [Options.IdleGrace] when it is zero.
const DefaultIdleGrace = time.Second

// Options tune an [HTTPServer]. The zero value is ready to use.
type Options struct {
	// IdleGrace is how long an idle keep-alive connection that cannot be
	// handed to the successor (TLS, or no successor because the service
	// stops) stays open during a drain, so that a client about to send
	// one more request gets it answered (with "Connection: close") rather
	// than racing the close. Zero means DefaultIdleGrace.
	IdleGrace time.Duration

	// GoAwayTimeout bounds the first phase of an HTTP/2 connection's
	// graceful shutdown: how long the drain waits for the client to
	// acknowledge the PING sent after the GOAWAY that refuses no stream,
	// before net/http's final GOAWAY names the last stream it will
	// answer. The ACK normally comes after one round trip; some clients
	// acknowledge no PING once they have read a GOAWAY, and for them the
	// drain waits this long. Zero means DefaultGoAwayTimeout.
	GoAwayTimeout time.Duration
}

// HTTPServer serves an *http.Server on listeners from molt and drains it
// without failing requests. Create it with [NewHTTPServer], call
// [HTTPServer.Serve] for each listener, and [HTTPServer.Drain] when
// [molt.Upgrader.Exit] is closed.
type HTTPServer struct {
	srv           *http.Server
	idleGrace     time.Duration
	goAwayTimeout time.Duration
	draining      chan struct{} // closed when Drain starts

	// serving counts running Serve calls. Drain waits for them: a
	// connection accepted just before the listener closed is known to
	// ConnState only once its Serve loop has moved on.
	serving sync.WaitGroup

	mu        sync.Mutex // protects the fields below
	conns     map[net.Conn]*connInfo
	hijacked  map[net.Conn]struct{}
	hijacking int // Hijack calls between net/http's StateHijacked and our books
	listeners map[net.Listener]struct{}
	h2        map[*h2Conn]struct{} // HTTP/2 connections being served
	goingAway bool                 // the first phase of HTTP/2's graceful shutdown began
	isDrain   bool
	changed   chan struct{} // closed and replaced on every change Drain waits for

	result outcome // of the first Drain call, which later calls return
}

// connInfo is what the drain knows about one connection.
type connInfo struct {
	state http.ConnState
	since time.Time // when it entered state
	proto int       // HTTP major version of its requests; 0 before the first
}

type connKey struct{}

// NewHTTPServer prepares srv to be drained and returns the HTTPServer
// that serves and drains it.
//
// It changes srv in place. It sets three fields, each built from the value
// the field holds at this call, and leaves every other field alone:
//   - Handler: srv.Handler (http.DefaultServeMux if nil), wrapped to mark
//     the responses written during a drain "Connection: close" and to book
//     hijacked connections;
//   - ConnState: the drain's books of every connection, then srv.ConnState
//     if it was set;
//   - ConnContext: srv.ConnContext if it was set, then the drain's own
//     context value.
//
// It also has net/http configure srv's HTTP/2 now rather than at the first
// Serve (what is configured is the same, and srv.TLSConfig gains "h2" in
// its NextProtos as it would then) and wraps the two HTTP/2 entries it
// puts in srv.TLSNextProto, so that the drain sees each HTTP/2 connection
// (see the package documentation's "HTTP/2").
//
// Set srv's fields before the call, do not set these three afterwards
// (connections would escape the drain's books), and call NewHTTPServer
// once per srv. From then on serve and stop srv only through the
// HTTPServer: [HTTPServer.Serve], not srv.Serve, ServeTLS or
// ListenAndServe, whose listeners Drain does not know (for TLS, give Serve
// a listener from tls.NewListener); [HTTPServer.Drain], not srv.Shutdown
// or srv.Close, which close idle connections and drop requests that the
// drain hands over or answers.
//
// A copy of srv would leave the caller's value alone, but an http.Server
// must not be copied (it holds a mutex), and one built from srv's exported
// fields would lose what only srv holds: the functions registered with
// srv.RegisterOnShutdown (golang.org/x/net/http2's ConfigureServer sends
// its GOAWAY from one), srv.SetKeepAlivesEnabled, and fields added by later
// Go releases.
func NewHTTPServer(srv *http.Server, opts ...Options) *HTTPServer {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	s := &HTTPServer{
		srv:           srv,
		idleGrace:     o.IdleGrace,
		goAwayTimeout: o.GoAwayTimeout,
		draining:      make(chan struct{}),
		conns:         make(map[net.Conn]*connInfo),
		hijacked:      make(map[net.Conn]struct{}),
		listeners:     make(map[net.Listener]struct{}),
		h2:            make(map[*h2Conn]struct{}),
		changed:       make(chan struct{}),
		result:        newOutcome(),
	}
	if s.idleGrace <= 0 {
		s.idleGrace = DefaultIdleGrace
	}
	if s.goAwayTimeout <= 0 {
		s.goAwayTimeout = DefaultGoAwayTimeout
	}
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
			s.sawRequest(c, r.ProtoMajor)
		}
		h.ServeHTTP(&closingWriter{ResponseWriter: w, s: s, http1: r.ProtoMajor == 1}, r)
	})
	userState := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		c = unwrapH2(c) // the connection net/http accepted, as every hook sees it
		if st == http.StateIdle {
			molt.Idle(c) // before net/http reads again: the hand-off's reference point
		}
		s.track(c, st)
		if userState != nil {
			userState(c, st)
		}
	}
	userCtx := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if userCtx != nil {
			ctx = userCtx(ctx, c)
		}
		return context.WithValue(ctx, connKey{}, c)
	}
	s.hookHTTP2(srv)
	return s
}

// Serve accepts connections on ln and serves them with srv until ln is
// closed or fails. Like srv.Serve, it closes ln when it returns.
//
// It returns nil when serving ended the ordinary way: [HTTPServer.Drain]
// began (a Serve called after that returns at once), or ln was closed (its
// Accept failed with [net.ErrClosed]) by [molt.Upgrader.Stop], which
// closes every listener it gave out, or by the caller. It returns
// [http.ErrServerClosed] if srv itself was shut down or closed behind the
// drain's back (see [NewHTTPServer]), and any other error of srv.Serve,
// such as a failure of ln's Accept, as it is (net/http retries temporary
// ones).
func (s *HTTPServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.isDrain {
		s.mu.Unlock()
		ln.Close() // as Drain would have, had Serve come first
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.serving.Add(1)
	s.mu.Unlock()
	defer s.serving.Done()
	err := s.srv.Serve(ln)
	// A closed listener is how every stop ends serving: Drain's, Stop's
	// and the listener's own Close, which releases its inventory entry.
	// None is a failure, and Serve cannot tell them apart. The drain is
	// checked too: a listener of the caller's may report its close with
	// an error of its own.
	if errors.Is(err, net.ErrClosed) || s.isDraining() {
		return nil
	}
	return err
}

// Draining returns a channel closed when Drain starts. Handlers of
// long-lived responses (streams, server-sent events) and of hijacked
// connections (WebSockets) select on it to finish their work before the
// drain's deadline.
func (s *HTTPServer) Draining() <-chan struct{} { return s.draining }

// Drain finishes this process's work after a hand-off. It stops accepting
// (the sockets live on in the successor, where new connections queue) and
// closes [HTTPServer.Draining]. Then, for HTTP/1.x:
//   - every request already accepted, or already in the kernel's buffer of
//     an accepted connection, is answered; responses written from now on
//     carry "Connection: close";
//   - an idle keep-alive connection is handed to the successor
//     ([molt.HandOver]) with whatever its client sent meanwhile, so it is
//     never closed under a client's feet (so is a new connection that has
//     sent nothing yet); one that cannot change process (TLS, or no
//     successor) is closed after [Options.IdleGrace] without a request,
//     counted from the start of the drain.
//
// Every HTTP/2 connection at once gets a GOAWAY that refuses no stream and
// a PING. When no HTTP/1 connection is left and every HTTP/2 client has
// acknowledged the PING (or had [Options.GoAwayTimeout] to), net/http's
// Shutdown sends the final GOAWAY and every stream the clients sent
// completes; then hijacked connections are waited for until their handlers
// close them. Drain returns
// nil when everything is finished, or ctx's error after closing whatever
// is left when ctx ends.
//
// Only the first call drains; ctx bounds that drain. Later calls,
// concurrent ones included, wait until it has finished and return its
// result, or their own ctx's error if that ends first.
func (s *HTTPServer) Drain(ctx context.Context) error {
	s.mu.Lock()
	if s.isDrain {
		s.mu.Unlock()
		return s.result.wait(ctx)
	}
	s.isDrain = true
	close(s.draining)
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	err := s.drain(ctx)
	s.result.set(err)
	return err
}

// drain is the first Drain call's work, once the listeners are closed.
func (s *HTTPServer) drain(ctx context.Context) error {
	s.serving.Wait()
	start := time.Now()
	s.startGoingAway()

	for {
		left, wake, changed := s.drainStep(start)
		if left == 0 {
			break
		}
		t := time.NewTimer(wake)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			s.closeAll()
			return context.Cause(ctx)
		}
		t.Stop()
	}
	// Only HTTP/2 and hijacked connections are left, and every HTTP/2
	// client has seen the first GOAWAY (or had GoAwayTimeout to): net/http's
	// Shutdown sends the final GOAWAY, naming the last stream the server
	// read, and waits for the streams up to it.
	if err := s.srv.Shutdown(ctx); err != nil {
		s.closeAll()
		return err
	}
	for { // hijacked connections end when their handlers close them
		s.mu.Lock()
		left, changed := len(s.hijacked)+s.hijacking, s.changed
		s.mu.Unlock()
		if left == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			s.closeAll()
			return context.Cause(ctx)
		}
	}
}

// retryHandOver is how soon an idle connection whose server was not yet
// waiting in its read is tried again.
const retryHandOver = 2 * time.Millisecond

// drainStep hands over or closes what it can, and reports how many
// connections the first phase still waits for (HTTP/1 connections, and
// HTTP/2 connections whose client has not yet acknowledged the first
// GOAWAY), when to look again, and the channel that signals the next
// change.
func (s *HTTPServer) drainStep(start time.Time) (left int, wake time.Duration, changed <-chan struct{}) {
	wake = time.Second
	type candidate struct {
		c     net.Conn
		since time.Time
		state http.ConnState
	}
	var tries []candidate
	now := time.Now()
	s.mu.Lock()
	changed = s.changed
	for c, ci := range s.conns {
		switch {
		case ci.proto == 2 || isH2(c):
			continue // HTTP/2: counted below, by its first GOAWAY
		case ci.state == http.StateNew:
			// However long it has been quiet: Go's Transport keeps
			// connections it dialed for a request that another
			// connection served, and sends their first request any time
			// later. Closing one races that request (EOF).
			tries = append(tries, candidate{c, ci.since, ci.state})
		case ci.state == http.StateIdle && ci.proto == 1:
			tries = append(tries, candidate{c, ci.since, ci.state})
		case ci.state == http.StateIdle:
			continue // idle before any HTTP/1 request: HTTP/2
		default:
			left++
		}
	}
	left += s.hijacking // a handler between Hijack and its booking
	for c := range s.h2 {
		if ok, d := c.settled(now); !ok {
			left++
			wake = min(wake, d)
		}
	}
	s.mu.Unlock()

	for _, t := range tries {
		err := handOver(t.c)
		switch {
		case err == nil:
			s.forget(t.c) // net/http's read ends with a timeout; it closes its copy
			continue
		case errors.Is(err, molt.ErrConnBusy):
			wake = min(wake, retryHandOver) // the server is about to wait in its read
		case t.state == http.StateNew:
			// Cannot change process (TLS, or no successor): its first
			// request comes, and is answered with Connection: close; one
			// that sent nothing for newConnGrace is closed.
			quiet := now.Sub(t.since)
			if quiet > newConnGrace {
				t.c.Close()
				s.forget(t.c)
				continue
			}
			wake = min(wake, newConnGrace-quiet)
		default:
			// Idle and cannot change process: give the client IdleGrace,
			// counted from the drain's start, to send one last request.
			idleFor := now.Sub(later(t.since, start))
			if idleFor >= s.idleGrace {
				t.c.Close()
				s.forget(t.c)
				continue
			}
			wake = min(wake, s.idleGrace-idleFor)
		}
		left++
	}
	return left, wake, changed
}

// startGoingAway begins the first phase of HTTP/2's graceful shutdown on
// every HTTP/2 connection, and on those that begin later.
func (s *HTTPServer) startGoingAway() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.goingAway = true
	for c := range s.h2 {
		c.begin(s.goAwayTimeout)
		go c.startGoAway()
	}
}

// addH2 books an HTTP/2 connection net/http's server is about to serve
// and returns it wrapped.
func (s *HTTPServer) addH2(nc net.Conn) *h2Conn {
	c := newH2Conn(nc, s.signal)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.h2[c] = struct{}{}
	if ci := s.conns[nc]; ci != nil {
		ci.proto = 2
	}
	if s.goingAway {
		c.begin(s.goAwayTimeout)
		go c.startGoAway()
	}
	s.signalLocked()
	return c
}

// removeH2 forgets an HTTP/2 connection whose server has returned.
func (s *HTTPServer) removeH2(c *h2Conn) {
	c.finish()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.h2, c)
	s.signalLocked()
}

// unwrapH2 returns the connection net/http accepted for one the drain
// wrapped for its HTTP/2 server.
func unwrapH2(c net.Conn) net.Conn {
	switch h := c.(type) {
	case *h2Conn:
		return h.Conn
	case h2TLSConn:
		return h.Conn
	}
	return c
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (s *HTTPServer) forget(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeAll closes every connection left when the deadline passed.
func (s *HTTPServer) closeAll() {
	s.srv.Close()
	s.mu.Lock()
	hijacked := make([]net.Conn, 0, len(s.hijacked))
	for c := range s.hijacked {
		hijacked = append(hijacked, c)
	}
	s.mu.Unlock()
	for _, c := range hijacked {
		c.Close() // takes s.mu to leave the books
	}
}

func (s *HTTPServer) track(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case http.StateHijacked, http.StateClosed:
		delete(s.conns, c)
	default:
		ci := s.conns[c]
		if ci == nil {
			ci = &connInfo{}
			s.conns[c] = ci
		}
		ci.state, ci.since = st, time.Now()
	}
	s.signalLocked()
}

func (s *HTTPServer) sawRequest(c net.Conn, proto int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ci := s.conns[c]; ci != nil && ci.proto != proto {
		ci.proto = proto
	}
}

func (s *HTTPServer) signal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signalLocked()
}

func (s *HTTPServer) signalLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *HTTPServer) isDraining() bool {
	select {
	case <-s.draining:
		return true
	default:
		return false
	}
}

// httpReadSize is the size of net/http's read buffer (bufio's default, in
// which its server reads requests): a connection whose server is blocked
// in a read this size holds none of the next request in this process.
const httpReadSize = 4096

// handOver passes an idle HTTP/1 connection to the successor (see
// molt.HandOver), telling molt what only net/http knows: the size of its
// read buffer. A TLS connection never moves: its session lives in this
// process. HTTP/2 connections never get here (drainStep leaves them to
// the two GOAWAYs); one whose client sent the h2c preface while it
// was new has been read from, and HandOver refuses it as busy.
func handOver(c net.Conn) error {
	if _, ok := c.(*tls.Conn); ok {
		return molt.ErrNotHandable
	}
	return molt.HandOver(c, httpReadSize)
}

// isH2 reports whether c negotiated HTTP/2 over TLS.
func isH2(c net.Conn) bool {
	tc, ok := c.(*tls.Conn)
	return ok && tc.ConnectionState().NegotiatedProtocol == "h2"
}

// closingWriter adds "Connection: close" to a response whose headers are
// written while the server drains, so the client does not reuse a
// connection this process is about to give up, and tracks hijacked
// connections.
type closingWriter struct {
	http.ResponseWriter
	s           *HTTPServer
	http1       bool // only HTTP/1 gets "Connection: close"
	wroteHeader bool
}

func (w *closingWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		// Not for HTTP/2: net/http's HTTP/2 server takes the header as a
		// cue to send its own final GOAWAY at once, naming the last
		// stream it has read, and the streams still on the wire would
		// never be answered.
		if w.http1 && w.s.isDraining() {
			w.Header().Set("Connection", "close")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *closingWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes http.Flusher through.
func (w *closingWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack passes http.Hijacker through; the drain waits for the hijacked
// connection until it is closed (or the deadline passes).
func (w *closingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.s.mu.Lock()
	w.s.hijacking++ // net/http forgets the connection before we book it
	w.s.mu.Unlock()
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.s.hijacking--
	w.s.signalLocked()
	if err != nil {
		return nil, nil, err
	}
	hc := &hijackedConn{Conn: c, s: w.s}
	w.s.hijacked[hc] = struct{}{}
	return hc, rw, nil
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *closingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// hijackedConn leaves the drain's books when its handler closes it.
type hijackedConn struct {
	net.Conn
	s    *HTTPServer
	once sync.Once
}

func (c *hijackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.hijacked, c)
		c.s.signalLocked()
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}
