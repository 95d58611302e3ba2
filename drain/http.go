package drain

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// newConnGrace is how long a connection that has sent nothing yet may stay
// open during a drain: a client that opened it will normally send its
// request at once, and net/http's own Shutdown uses the same five seconds.
const newConnGrace = 5 * time.Second

// HTTPServer serves an *http.Server on listeners from molt and drains it
// without dropping requests. Create it with [NewHTTPServer], call
// [HTTPServer.Serve] for each listener, and [HTTPServer.Drain] when
// [molt.Upgrader.Exit] is closed.
type HTTPServer struct {
	srv *http.Server

	// serving counts running Serve calls. Drain waits for them: a
	// connection accepted just before the listener closed is known to
	// ConnState only once its Serve loop has moved on.
	serving sync.WaitGroup

	mu        sync.Mutex // protects the fields below
	conns     map[net.Conn]connState
	listeners map[net.Listener]struct{}
	draining  bool
	changed   chan struct{} // closed and replaced on every change the drain waits for
}

type connState struct {
	state http.ConnState
	since time.Time
}

// NewHTTPServer prepares srv to be drained: it wraps srv.Handler (nil means
// http.DefaultServeMux) and chains srv.ConnState. Set srv's fields before;
// do not call srv.Serve or srv.Shutdown yourself.
func NewHTTPServer(srv *http.Server) *HTTPServer {
	s := &HTTPServer{
		srv:       srv,
		conns:     make(map[net.Conn]connState),
		listeners: make(map[net.Listener]struct{}),
		changed:   make(chan struct{}),
	}
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&closingWriter{ResponseWriter: w, s: s}, r)
	})
	user := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		s.track(c, st)
		if user != nil {
			user(c, st)
		}
	}
	return s
}

// Serve accepts connections on ln until [HTTPServer.Drain] closes it, and
// then returns nil; any other error of srv.Serve is returned as is.
func (s *HTTPServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.serving.Add(1)
	s.mu.Unlock()
	defer s.serving.Done()
	err := s.srv.Serve(ln)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return nil
	}
	return err
}

// Drain stops accepting (the sockets live on in the successor), lets every
// accepted connection finish the request it is on, answers each with
// "Connection: close", closes connections only while they are idle, and
// returns nil once none is left. If ctx ends first, it closes the rest and
// returns ctx's error.
//
// An idle keep-alive connection is closed while idle; a client that sends
// a request on it at that very moment sees the connection close (Go's
// client retries idempotent requests then). Hijacked connections are the
// application's to finish.
func (s *HTTPServer) Drain(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	s.serving.Wait()

	for {
		s.mu.Lock()
		left := 0
		now := time.Now()
		for c, cs := range s.conns {
			if cs.state == http.StateIdle || (cs.state == http.StateNew && now.Sub(cs.since) > newConnGrace) {
				c.Close()
				delete(s.conns, c)
				continue
			}
			left++
		}
		changed := s.changed
		s.mu.Unlock()
		if left == 0 {
			break
		}
		t := time.NewTimer(time.Second) // re-check connections that were new
		select {
		case <-changed:
		case <-ctx.Done():
			t.Stop()
			s.srv.Close()
			return context.Cause(ctx)
		case <-t.C:
		}
		t.Stop()
	}
	// No connection is left: net/http's Shutdown now only tidies up.
	return s.srv.Shutdown(ctx)
}

func (s *HTTPServer) track(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case http.StateHijacked, http.StateClosed:
		delete(s.conns, c)
	default:
		s.conns[c] = connState{state: st, since: time.Now()}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *HTTPServer) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// closingWriter adds "Connection: close" to a response whose headers are
// written while the server drains, so the client does not reuse a
// connection this process is about to close.
type closingWriter struct {
	http.ResponseWriter
	s           *HTTPServer
	wroteHeader bool
}

func (w *closingWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		if w.s.isDraining() {
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

// Hijack passes http.Hijacker through.
func (w *closingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("drain: the underlying ResponseWriter cannot be hijacked")
	}
	return h.Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *closingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
