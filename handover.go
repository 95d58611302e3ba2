package molt

import (
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
// of an Upgrader (directly, or wrapped in types whose NetConn methods lead
// to it), has answered every request it read from c and waits for the
// next one; bytes read from then on belong to a request it has not seen.
// Call it when the server goes idle, before it reads again (package drain
// does, from http.Server.ConnState). For other connections it does nothing.
func Idle(c net.Conn) {
	if ac := acceptedOf(c); ac != nil {
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
// molt knows nothing of the protocol; the server vouches for two things.
// bufSize is the size of its read buffer: HandOver succeeds only while the
// server is blocked in a Read of at least bufSize bytes that returned
// nothing since Idle, which means its buffer is empty and no byte of the
// next request is left behind in this process (net/http reads 4096 bytes
// at a time; package drain passes that). On a connection nothing was ever
// read from, a Read of any size will do: nothing can be left behind. And
// no layer between c and the accepted connection may hold state of the
// stream: c may be wrapped (a type with a NetConn method returning the
// connection it wraps, in a chain), but a *tls.Conn, whose session lives
// in this process, must never be handed over — its server must not call
// HandOver.
//
// HandOver fails with [ErrConnBusy] if request bytes reached the server
// since Idle, or the server is not waiting in such a read yet (try again
// shortly; during a drain, answer with "Connection: close"),
// [ErrNotHandable] if no molt listener accepted c, and [ErrNoSuccessor]
// before a successful upgrade; c is then unchanged.
func HandOver(c net.Conn, bufSize int) error {
	ac := acceptedOf(c)
	if ac == nil {
		return fmt.Errorf("%w: %T does not lead to a connection a molt listener accepted", ErrNotHandable, c)
	}
	return ac.handOver(bufSize)
}

// acceptedOf finds the connection a molt listener accepted under c's
// wrappers, following their NetConn methods; nil if there is none.
func acceptedOf(c net.Conn) *acceptedConn {
	for range 16 { // a chain longer than this is a loop
		switch x := c.(type) {
		case *acceptedConn:
			return x
		case interface{ NetConn() net.Conn }:
			if c = x.NetConn(); c == nil {
				return nil
			}
		default:
			return nil
		}
	}
	return nil
}

// handState is where an accepted connection is in a hand-over.
type handState int

const (
	handNone      handState = iota // served by this process
	handRequested                  // HandOver is deciding; reads wait
	handDone                       // the successor has it; reads fail
)

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
	everRead  bool      // Read has returned a byte at some time
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
		c.sinceIdle += n
		c.everRead = c.everRead || n > 0
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

func (c *acceptedConn) handOver(bufSize int) error {
	c.mu.Lock()
	switch {
	case c.state != handNone || c.sinceIdle > 0 || c.reading != 1 || (c.readLen < bufSize && c.everRead):
		// Not (yet) waiting in an empty-buffer read for the next request:
		// the server may hold bytes of it (a pipelined request, the byte of
		// net/http's background read), or be about to read. A connection
		// nothing was ever read from holds nothing whatever the read's
		// size (net/http's first read, which looks for the h2c preface,
		// asks for 14 bytes).
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
	err := passOn(c.l.inv.send, c, c.l.e.connWire())

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

// passOn sends c's socket to the successor with send, as a connection
// accepted on the listener w names.
func passOn(send func(handoff.Entry, int) error, c liveHandle, w handoff.Entry) error {
	fd, err := dupFD(c)
	if err != nil {
		return fmt.Errorf("molt: hand over a connection: %w", err)
	}
	defer closeFD(fd)
	return send(w, fd)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
