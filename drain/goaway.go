package drain

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultGoAwayTimeout is [Options.GoAwayTimeout] when it is zero.
const DefaultGoAwayTimeout = time.Second

// prefaceTimeout bounds the read of an HTTP/2-over-TLS client's preface,
// which the drain reads on net/http's behalf (see hookHTTP2); net/http's
// own server allows the same ten seconds.
const prefaceTimeout = 10 * time.Second

// The TLSNextProto keys under which net/http's server (and
// golang.org/x/net/http2's ConfigureServer) registers HTTP/2: "h2" for
// HTTP/2 over TLS, "unencrypted_http2" for h2c with prior knowledge,
// which net/http hands over with the client preface already read.
const (
	nextProtoTLS         = "h2"
	nextProtoUnencrypted = "unencrypted_http2"
)

// h2Conn stands between net/http's HTTP/2 server and one connection, so
// that the drain can add the first phase of a graceful shutdown (a GOAWAY
// that refuses nothing, and a PING) to the server's own frames, and see
// the PING's ACK, which net/http ignores (it acts only on the ACK of a
// PING it sent itself).
type h2Conn struct {
	net.Conn // *tls.Conn for HTTP/2 over TLS, the TCP connection for h2c

	mu      sync.Mutex // held through each of the server's writes, and through the injection
	out     frameScanner
	pending bool // the first phase waits for a frame boundary in the server's writes

	in frameScanner // used by the server's one reading goroutine only

	// ping is the first phase's PING payload, written once before
	// started is set.
	ping    [pingLen]byte
	started atomic.Bool

	deadline time.Time // when the drain stops waiting for done; the HTTPServer's mu guards it

	once   sync.Once
	done   chan struct{} // closed when the PING's ACK came, the server sent its own GOAWAY, or the connection ended
	onDone func()
}

// h2TLSConn is an h2Conn over TLS. It reports the TLS state, so that
// net/http's HTTP/2 server applies its TLS checks (RFC 9113 §9.2) and
// fills Request.TLS as it does for a *tls.Conn. The h2c h2Conn must not
// have this method: net/http would take it for TLS.
type h2TLSConn struct{ *h2Conn }

func (c h2TLSConn) ConnectionState() tls.ConnectionState {
	return c.Conn.(*tls.Conn).ConnectionState()
}

// newH2Conn wraps c, from which the client preface has been read.
func newH2Conn(c net.Conn, onDone func()) *h2Conn {
	h := &h2Conn{Conn: c, done: make(chan struct{}), onDone: onDone}
	h.in.onPingAck = func(data [pingLen]byte) {
		if h.isOurPing(data) {
			h.finish()
		}
	}
	return h
}

// NetConn returns the connection net/http's server would have had, as
// tls.Conn's NetConn does.
func (c *h2Conn) NetConn() net.Conn { return c.Conn }

func (c *h2Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.scan(p[:n], false)
	if err != nil {
		c.finish() // no ACK can come any more
	}
	return n, err
}

// Write passes the server's bytes on, putting the first phase's frames at
// the first frame boundary once it is pending.
func (c *h2Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.pending {
		c.out.scan(p, false)
		return c.Conn.Write(p)
	}
	k := c.out.scan(p, true)
	if !c.out.atBoundary() { // no boundary in p, all of which was followed
		return c.Conn.Write(p)
	}
	n, err := c.Conn.Write(p[:k])
	if err != nil {
		return n, err
	}
	if err := c.injectLocked(); err != nil {
		return n, err
	}
	if k == len(p) {
		return n, nil
	}
	c.out.scan(p[k:], false)
	m, err := c.Conn.Write(p[k:])
	return n + m, err
}

func (c *h2Conn) Close() error {
	c.finish()
	return c.Conn.Close()
}

// startGoAway asks for the first phase: written at once if the server's
// frames are at a boundary, else by the server's next write. It blocks
// while one of the server's writes is in progress, so the drain calls it
// on a goroutine of its own.
func (c *h2Conn) startGoAway() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.out.goAway {
		// The server has shut the connection down itself (an idle
		// timeout, an error): a GOAWAY may not raise the last stream id
		// it sent (§6.8).
		c.finish()
		return
	}
	if !c.out.atBoundary() {
		c.pending = true
		return
	}
	c.injectLocked()
}

func (c *h2Conn) injectLocked() error {
	c.pending = false
	if c.out.goAway {
		c.finish()
		return nil
	}
	_, err := c.Conn.Write(firstGoAway(c.ping))
	if err != nil {
		c.finish()
	}
	return err
}

func (c *h2Conn) isOurPing(data [pingLen]byte) bool {
	return c.started.Load() && data == c.ping
}

func (c *h2Conn) finish() {
	c.once.Do(func() {
		close(c.done)
		if c.onDone != nil {
			c.onDone()
		}
	})
}

// settled reports whether the drain need not wait for c any more, and if
// not, how long it may still wait.
func (c *h2Conn) settled(now time.Time) (bool, time.Duration) {
	select {
	case <-c.done:
		return true, 0
	default:
	}
	if !now.Before(c.deadline) {
		return true, 0
	}
	return false, c.deadline.Sub(now)
}

// begin prepares the first phase, once: a fresh PING payload and the time
// the drain stops waiting for its ACK. The HTTPServer's mu is held; then
// startGoAway, on a goroutine of its own, sends it.
func (c *h2Conn) begin(timeout time.Duration) {
	rand.Read(c.ping[:])
	c.started.Store(true)
	c.deadline = time.Now().Add(timeout)
}

// hookHTTP2 puts an h2Conn between net/http's HTTP/2 server and every
// HTTP/2 connection srv serves, by wrapping the functions srv registers
// in TLSNextProto. It reports whether it did: not when srv serves no
// HTTP/2 or its HTTP/2 server lacks the unencrypted hand-over this needs.
//
// net/http configures HTTP/2 lazily, at srv's first Serve. hookHTTP2 has
// it done now with a ServeTLS call that fails before it serves anything
// (its certificate file name is invalid): ServeTLS configures HTTP/2
// first, and the drain needs the functions it registers. The call is
// skipped where Serve would not configure HTTP/2 either (a TLSConfig
// whose NextProtos lack "h2").
//
// An HTTP/2-over-TLS connection reaches net/http's HTTP/2 server as a
// *tls.Conn, and nothing can stand between the two on the plaintext
// side. So the drain reads the client preface itself and hands the
// connection, wrapped, to the server's unencrypted entry point, as
// net/http does for h2c; the wrapper reports the TLS state, so the server
// treats it as TLS in every respect.
func (s *HTTPServer) hookHTTP2(srv *http.Server) bool {
	if srv.TLSConfig == nil || slices.Contains(srv.TLSConfig.NextProtos, nextProtoTLS) {
		srv.ServeTLS(nil, "\x00", "\x00") // see above: only configures HTTP/2
	}
	serveH2c, ok := srv.TLSNextProto[nextProtoUnencrypted]
	if !ok {
		return false
	}
	srv.TLSNextProto[nextProtoUnencrypted] = func(hs *http.Server, tc *tls.Conn, h http.Handler) {
		inner, ok := tc.NetConn().(interface{ UnencryptedNetConn() net.Conn })
		if !ok {
			serveH2c(hs, tc, h) // not net/http's hand-over: left as it is
			return
		}
		c := s.addH2(inner.UnencryptedNetConn())
		defer s.removeH2(c)
		serveH2c(hs, unencrypted(c), h)
	}
	if _, ok := srv.TLSNextProto[nextProtoTLS]; ok {
		srv.TLSNextProto[nextProtoTLS] = func(hs *http.Server, tc *tls.Conn, h http.Handler) {
			c := s.addH2(tc)
			defer s.removeH2(c)
			if err := readPreface(tc); err != nil {
				// net/http's HTTP/2 server would log and close too.
				logf(hs, "drain: HTTP/2 client %s: %v", tc.RemoteAddr(), err)
				tc.Close()
				return
			}
			serveH2c(hs, unencrypted(h2TLSConn{c}), h)
		}
	}
	return true
}

// logf logs as srv does its own errors.
func logf(srv *http.Server, format string, args ...any) {
	if srv.ErrorLog != nil {
		srv.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// readPreface reads and checks an HTTP/2 client's connection preface.
func readPreface(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(prefaceTimeout))
	defer c.SetReadDeadline(time.Time{})
	var b [len(clientPreface)]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return errors.New("reading the connection preface: " + err.Error())
	}
	if string(b[:]) != clientPreface {
		return errors.New("bad connection preface")
	}
	return nil
}

// unencrypted wraps c as net/http hands an h2c connection to its HTTP/2
// server: a *tls.Conn that has never been used, over a net.Conn whose
// UnencryptedNetConn method returns c. That interface is all the HTTP/2
// server checks.
func unencrypted(c net.Conn) *tls.Conn {
	return tls.Client(unencryptedConn{Conn: c}, nil)
}

type unencryptedConn struct{ net.Conn }

func (u unencryptedConn) UnencryptedNetConn() net.Conn { return u.Conn }
