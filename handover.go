package molt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// Errors of [HandOver].
var (
	// ErrNotHandable: the connection cannot change process. It was not
	// accepted from a listener of an Upgrader (a TLS connection wraps the
	// accepted one, and its session state lives in this process), or its
	// client speaks HTTP/2 or pipelines HTTP/1.1 requests, whose state
	// lives in this process too.
	ErrNotHandable = errors.New("molt: connection cannot be handed over")

	// ErrConnBusy: request bytes arrived since the connection was marked
	// idle; the server must answer them itself.
	ErrConnBusy = errors.New("molt: connection is not idle")

	// ErrNoSuccessor: no successor has taken over from this generation (or
	// it is gone), so there is nobody to hand a connection to.
	ErrNoSuccessor = errors.New("molt: no successor to hand the connection to")
)

// errHandedOver is what a handed-over connection's Read returns in this
// process. It is a timeout, so servers treat it as the quiet end of an idle
// connection.
var errHandedOver = &handedOverError{}

type handedOverError struct{}

func (*handedOverError) Error() string   { return "molt: connection handed over to the successor" }
func (*handedOverError) Timeout() bool   { return true }
func (*handedOverError) Temporary() bool { return false }
func (*handedOverError) Unwrap() error   { return os.ErrDeadlineExceeded }

// Idle records that the server of c, a connection accepted from a listener
// of an Upgrader, has answered every request it read from c and waits for
// the next one; bytes read from then on belong to a request it has not
// seen. Call it from http.Server.ConnState for http.StateIdle (package drain
// does). For other connections it does nothing.
func Idle(c net.Conn) {
	if ac, ok := c.(*acceptedConn); ok {
		ac.idle()
	}
}

// HandOver passes c, idle since the last [Idle], to the successor that took
// over from this generation. The successor's listener for the same address
// returns it from Accept, and its server reads the next request from the
// kernel's buffer, where it waits if the client already sent it. In this
// process c is finished: its server's blocked read returns a timeout error
// (so it closes its copy) and the client notices nothing.
//
// HandOver fails with [ErrConnBusy] if request bytes reached the server
// since [Idle] (answer them, with "Connection: close" during a drain),
// [ErrNotHandable] for a connection that cannot change process, and
// [ErrNoSuccessor] before a successful upgrade; c is then unchanged.
func HandOver(c net.Conn) error {
	ac, ok := c.(*acceptedConn)
	if !ok {
		return ErrNotHandable
	}
	return ac.handOver()
}

// handState is where an accepted connection is in a hand-off.
type handState int

const (
	handNone      handState = iota // served by this process
	handRequested                  // HandOver is deciding; reads wait
	handDone                       // the successor has it; reads fail
)

// h2Preface starts every HTTP/2 connection without TLS (h2c).
var h2Preface = []byte("PRI * HTTP/2.0\r\n")

// acceptedConn is a connection accepted from a molt listener. It watches
// its reads so that HandOver can tell, race-free, whether the server has
// consumed any byte of a request it has not answered: HandOver sets a read
// deadline in the past and decides when the server's blocked read returns.
// If that read returned bytes, a request arrived first and the hand-off is
// abandoned; if it returned the timeout, nothing was consumed and every
// byte the client sent is still in the kernel's buffer, which moves with
// the descriptor.
type acceptedConn struct {
	net.Conn
	l *listener

	mu        sync.Mutex // protects the fields below
	cond      sync.Cond  // signalled when reading or state changes
	state     handState
	reading   int       // Reads inside c.Conn.Read
	sinceIdle int       // bytes Read returned since the last idle()
	idles     int       // idle() calls so far
	sawBytes  bool      // some Read returned data
	notHand   bool      // HTTP/2 or pipelining seen: never hand over
	deadline  time.Time // the read deadline the server asked for last
}

func newAcceptedConn(c net.Conn, l *listener) *acceptedConn {
	ac := &acceptedConn{Conn: c, l: l}
	ac.cond.L = &ac.mu
	return ac
}

func (c *acceptedConn) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		for c.state == handRequested {
			c.cond.Wait()
		}
		if c.state == handDone {
			c.mu.Unlock()
			return 0, errHandedOver
		}
		c.reading++
		c.mu.Unlock()

		n, err := c.Conn.Read(p)

		c.mu.Lock()
		c.reading--
		if n > 0 {
			if !c.sawBytes && bytes.HasPrefix(p[:n], h2Preface[:min(n, len(h2Preface))]) {
				c.notHand = true // h2c: its streams' state cannot move
			}
			c.sawBytes = true
			c.sinceIdle += n
		}
		c.cond.Broadcast()
		if c.state == handRequested && n == 0 && isTimeout(err) {
			// The hand-off's deadline ended this read: wait for the verdict.
			for c.state == handRequested {
				c.cond.Wait()
			}
			if c.state == handDone {
				c.mu.Unlock()
				return 0, errHandedOver
			}
			c.mu.Unlock()
			continue // abandoned: read again, under the server's deadline
		}
		c.mu.Unlock()
		return n, err
	}
}

// SetReadDeadline is the server's deadline; while a hand-off decides, it is
// remembered and applied if the hand-off is abandoned.
func (c *acceptedConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if c.state != handNone {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines; the read deadline as SetReadDeadline.
func (c *acceptedConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// CloseWrite shuts down the sending side, unless the connection was handed
// over: shutdown(2) would act on the socket the successor serves.
func (c *acceptedConn) CloseWrite() error {
	c.mu.Lock()
	handed := c.state == handDone
	c.mu.Unlock()
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok && !handed {
		return cw.CloseWrite()
	}
	return nil
}

// ReadFrom keeps the socket's own ReadFrom (sendfile, splice) reachable.
func (c *acceptedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// SyscallConn gives access to the socket.
func (c *acceptedConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

// NetConn returns the connection molt wraps.
func (c *acceptedConn) NetConn() net.Conn { return c.Conn }

func (c *acceptedConn) idle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idles > 0 && c.sinceIdle == 0 {
		// A request was served without a byte read since the last idle:
		// it came from the server's buffer. The client pipelines, and the
		// server may hold bytes of its next request too.
		c.notHand = true
	}
	c.idles++
	c.sinceIdle = 0
}

func (c *acceptedConn) handOver() error {
	c.mu.Lock()
	switch {
	case c.notHand:
		c.mu.Unlock()
		return ErrNotHandable
	case c.state != handNone || c.idles == 0 || c.sinceIdle > 0:
		c.mu.Unlock()
		return ErrConnBusy
	}
	c.state = handRequested
	c.Conn.SetReadDeadline(time.Unix(1, 0)) // ends a blocked read without consuming anything
	for c.reading > 0 {
		c.cond.Wait()
	}
	if c.sinceIdle > 0 { // the read returned request bytes first
		c.abandonLocked()
		c.mu.Unlock()
		return ErrConnBusy
	}
	c.mu.Unlock()

	// No read is running and none can start: everything the client sent
	// since the idle point is in the kernel's buffer.
	err := c.l.u.sendConn(c)

	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.abandonLocked()
		return err
	}
	c.state = handDone
	c.cond.Broadcast()
	return nil
}

// abandonLocked returns the connection to its server, with its deadline.
func (c *acceptedConn) abandonLocked() {
	c.state = handNone
	c.Conn.SetReadDeadline(c.deadline)
	c.cond.Broadcast()
}

// sendConn passes ac's socket to the successor, with the name of the
// listener it was accepted on.
func (u *Upgrader) sendConn(ac *acceptedConn) error {
	u.mu.Lock()
	s := u.successor
	u.mu.Unlock()
	if s == nil {
		return ErrNoSuccessor
	}
	fd, err := dupFD(ac)
	if err != nil {
		return fmt.Errorf("molt: hand over a connection: %w", err)
	}
	defer closeFD(fd)
	le := ac.l.e
	e := handoff.Entry{Kind: handoff.KindConn, Network: le.network, Addr: le.key, Name: le.name}
	u.sendMu.Lock()
	defer u.sendMu.Unlock()
	s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := s.conn.SendConn(e, fd); err != nil {
		return fmt.Errorf("%w: %w", ErrNoSuccessor, err)
	}
	return nil
}

// receiveConn gives a connection the parent handed over to the listener it
// was accepted on, or closes it if this generation has no such listener.
func (u *Upgrader) receiveConn(m handoff.Message) {
	f := os.NewFile(uintptr(m.FD), "molt:conn")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		u.log.Warn("molt: connection from parent unusable", "err", err)
		return
	}
	u.mu.Lock()
	var l *listener
	for _, e := range u.entries {
		if e.kind != handoff.KindListener || e.network != m.Entry.Network || e.name != m.Entry.Name ||
			(e.name == "" && e.key != m.Entry.Addr) {
			continue
		}
		if h, ok := e.handle.(*listener); ok {
			l = h
			break
		}
	}
	u.mu.Unlock()
	if l == nil || !l.push(c) {
		u.log.Warn("molt: connection from parent for a listener this generation does not serve",
			"entry", m.Entry.Network+" "+m.Entry.Addr)
		c.Close()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
