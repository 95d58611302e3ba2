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
// HandOver succeeds only while the server is blocked reading c with an
// empty buffer (net/http's 4096-byte read), so no byte of a request can be
// left behind in this process: a connection nothing was read from yet
// qualifies too. It fails with [ErrConnBusy] if request bytes reached the
// server since [Idle], or the server is not waiting in such a read yet (try
// again shortly; during a drain, answer with "Connection: close"),
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

// fullRead is the size of net/http's read buffer. A read of at least this
// size means the server's buffer is empty (bufio reads into its free space,
// and a byte kept by net/http's background read shortens the next read);
// only while such a read is blocked can a connection change process without
// leaving bytes behind. Servers with smaller buffers are never handed over.
const fullRead = 4096

// tlsRecord is the first byte of a TLS handshake: a connection whose
// session lives in this process.
const tlsRecord = 0x16

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
	readLen   int       // len(p) of the Read inside c.Conn.Read, when reading == 1
	sinceIdle int       // bytes Read returned since the last idle() (or since accept)
	sawBytes  bool      // some Read returned data
	notHand   bool      // HTTP/2 or TLS seen: never hand over
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
		c.readLen = len(p)
		c.mu.Unlock()

		n, err := c.Conn.Read(p)

		c.mu.Lock()
		c.reading--
		if n > 0 {
			if !c.sawBytes && (p[0] == tlsRecord || bytes.HasPrefix(p[:n], h2Preface[:min(n, len(h2Preface))])) {
				c.notHand = true // TLS or h2c: their state cannot move
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

// Write fails once the connection was handed over: the successor writes
// to this stream now.
func (c *acceptedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	handed := c.state == handDone
	c.mu.Unlock()
	if handed {
		return 0, errHandedOver
	}
	return c.Conn.Write(p)
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

// CloseWrite shuts down the sending side, unless the connection was (or is
// being) handed over: shutdown(2) would act on the socket the successor
// serves.
func (c *acceptedConn) CloseWrite() error {
	c.mu.Lock()
	handed := c.state != handNone
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
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, ErrNotHandable
	}
	return sc.SyscallConn()
}

// NetConn returns the connection molt wraps.
func (c *acceptedConn) NetConn() net.Conn { return c.Conn }

func (c *acceptedConn) idle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sinceIdle = 0
}

func (c *acceptedConn) handOver() error {
	c.mu.Lock()
	switch {
	case c.notHand:
		c.mu.Unlock()
		return ErrNotHandable
	case c.state != handNone || c.sinceIdle > 0 || c.reading != 1 || c.readLen < fullRead:
		// Not (yet) waiting in an empty-buffer read for the next request:
		// the server may hold bytes of it (a pipelined request, the byte of
		// net/http's background read), or be about to read.
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
	fd, err := dupFD(ac)
	if err != nil {
		return fmt.Errorf("molt: hand over a connection: %w", err)
	}
	defer closeFD(fd)
	return u.sendFD(ac.l.e.connWire(), fd)
}

// sendFD sends one connection's descriptor to the successor. After one
// failure (a successor that stopped reading) it fails at once, so a drain
// does not wait for every connection in turn.
func (u *Upgrader) sendFD(e handoff.Entry, fd int) error {
	u.mu.Lock()
	s := u.successor
	u.mu.Unlock()
	if s == nil {
		return ErrNoSuccessor
	}
	u.sendMu.Lock()
	defer u.sendMu.Unlock()
	if s.sendErr != nil {
		return s.sendErr
	}
	s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := s.conn.SendConn(e, fd); err != nil {
		s.sendErr = fmt.Errorf("%w: %w", ErrNoSuccessor, err)
		return s.sendErr
	}
	return nil
}

// receiveConn gives a connection the parent handed over to the listener it
// was accepted on. If this generation no longer serves that listener (it is
// draining itself), the connection goes on to its own successor; only
// without one is it closed.
func (u *Upgrader) receiveConn(m handoff.Message) {
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
	if l != nil {
		f := os.NewFile(uintptr(m.FD), "molt:conn")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			u.log.Warn("molt: connection from parent unusable", "err", err)
			return
		}
		if l.push(c) {
			return
		}
		u.forward(c.(liveHandle), m.Entry)
		c.Close()
		return
	}
	defer closeFD(m.FD)
	if err := u.sendFD(m.Entry, m.FD); err != nil {
		u.log.Warn("molt: connection from parent for a listener this generation does not serve",
			"entry", m.Entry.Network+" "+m.Entry.Addr, "err", err)
	}
}

// forward sends a connection that reached a closed listener on to the
// successor, if there is one.
func (u *Upgrader) forward(c liveHandle, e handoff.Entry) {
	fd, err := dupFD(c)
	if err != nil {
		return
	}
	defer closeFD(fd)
	if err := u.sendFD(e, fd); err != nil {
		u.log.Warn("molt: handed-over connection reached a closed listener", "entry", e.Network+" "+e.Addr, "err", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
