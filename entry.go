package molt

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// entry is one handle of the inventory: something that outlives this
// generation. An entry is either inherited and unclaimed (it owns fd) or
// live (it holds the object this process uses, and fd is -1).
//
// Entries are owned by Upgrader.mu: fields are changed only with it held.
type entry struct {
	kind    handoff.Kind
	network string // canonical network; "" for files
	key     string // canonical requested address; "" for named entries
	name    string // explicit name; "" for address-keyed entries

	fd     int        // inherited, not yet claimed: the descriptor this entry owns; else -1
	live   liveHandle // the object in use (never the wrapper handed out); nil while unclaimed
	handle any        // what the look-ups return: net.Listener, net.PacketConn, net.Conn or *os.File
	path   string     // Unix socket file served by this entry; "" for others
	pathID fileID     // identity of that file when it was bound; zero if unknown
	owns   bool       // this generation may remove path: it created it, or took it over at Ready
	wasInh bool       // inherited from the parent (for status and logs)
	unsent bool       // the running upgrade has yet to duplicate and send it
}

// liveHandle is what every handle in use must be: closable, and able to
// lend its descriptor for a dup without (*os.File).Fd, which would switch a
// socket to blocking mode for every process sharing it.
type liveHandle interface {
	io.Closer
	syscall.Conn
}

// isOpen reports whether h's descriptor can still be reached: its owner has
// not closed it. It makes no system call.
func isOpen(h liveHandle) bool {
	if h == nil {
		return false
	}
	rc, err := h.SyscallConn()
	return err == nil && rc.Control(func(uintptr) {}) == nil
}

// fileID identifies a file independently of its name (st_dev, st_ino).
type fileID struct{ dev, ino uint64 }

func (id fileID) known() bool { return id != fileID{} }

// describe names an entry in errors and logs: "tcp [::]:8080" or "file \"state\"".
func (e *entry) describe() string {
	if e.name != "" {
		return e.kind.String() + " " + quote(e.name)
	}
	return e.network + " " + e.key
}

func quote(s string) string { return "\"" + s + "\"" }

// wire returns the entry's metadata as it crosses to the successor.
func (e *entry) wire() handoff.Entry {
	return handoff.Entry{
		Kind:    e.kind,
		Network: e.network,
		Addr:    e.key,
		Name:    e.name,
		PathDev: e.pathID.dev,
		PathIno: e.pathID.ino,
	}
}

// connWire names a connection accepted on this entry's listener.
func (e *entry) connWire() handoff.Entry {
	return handoff.Entry{Kind: handoff.KindConn, Network: e.network, Addr: e.key, Name: e.name}
}

// closeHandle closes what the entry holds: the live object, or the
// inherited descriptor nobody claimed.
func (e *entry) closeHandle() error {
	if l, ok := e.handle.(*listener); ok {
		l.closeQueue()
	}
	if e.live != nil {
		return e.live.Close()
	}
	if e.fd >= 0 {
		closeFD(e.fd)
		e.fd = -1
	}
	return nil
}

// The wrappers below are what the Listen, Add and look-up methods return.
// Their Close releases the inventory entry, so a closed listener really
// closes its port (unless a successor holds a copy) instead of leaving a
// socket that accepts into nowhere. Every other method is the embedded
// object's own.

type listener struct {
	net.Listener
	u *Upgrader
	e *entry

	mu     sync.Mutex // protects queue and closed
	queue  []net.Conn // connections the parent handed over, not yet accepted
	closed bool
}

// Accept returns the next connection: one the parent generation handed
// over (see HandOver), or a new one from the kernel. Connections are
// wrapped so that they can be handed over in turn.
func (l *listener) Accept() (net.Conn, error) {
	for {
		if c := l.pop(); c != nil {
			return c, nil
		}
		c, err := l.Listener.Accept()
		if err != nil {
			if isTimeout(err) && !l.isClosed() {
				// push woke us with a deadline in the past (nobody else
				// can set one on this listener): clear it, take the queue.
				l.setDeadline(time.Time{})
				continue
			}
			return nil, err
		}
		return newAcceptedConn(c, l), nil
	}
}

// push queues a connection handed over by the parent and wakes Accept. It
// reports false if the listener is closed.
func (l *listener) push(c net.Conn) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.queue = append(l.queue, newAcceptedConn(c, l))
	l.mu.Unlock()
	l.setDeadline(time.Unix(1, 0))
	return true
}

func (l *listener) pop() net.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queue) == 0 {
		return nil
	}
	c := l.queue[0]
	l.queue[0] = nil
	l.queue = l.queue[1:]
	return c
}

func (l *listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

func (l *listener) setDeadline(t time.Time) {
	if d, ok := l.Listener.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(t)
	}
}

func (l *listener) Close() error {
	l.closeQueue()
	return l.u.release(l.e)
}

// closeQueue refuses further hand-overs and passes the connections not yet
// accepted on to the successor (when this generation drains), else closes
// them.
func (l *listener) closeQueue() {
	l.mu.Lock()
	l.closed = true
	queued := l.queue
	l.queue = nil
	l.mu.Unlock()
	for _, c := range queued {
		l.u.forward(c.(*acceptedConn), l.e.connWire())
		c.Close()
	}
}

// SyscallConn gives access to the listening socket (for socket options).
func (l *listener) SyscallConn() (syscall.RawConn, error) { return l.e.live.SyscallConn() }

type packetConn struct {
	net.PacketConn
	u *Upgrader
	e *entry
}

func (c *packetConn) Close() error { return c.u.release(c.e) }

// SyscallConn gives access to the socket (for socket options).
func (c *packetConn) SyscallConn() (syscall.RawConn, error) { return c.e.live.SyscallConn() }

type conn struct {
	net.Conn
	u *Upgrader
	e *entry
}

func (c *conn) Close() error { return c.u.release(c.e) }

// SyscallConn gives access to the socket (for socket options).
func (c *conn) SyscallConn() (syscall.RawConn, error) { return c.e.live.SyscallConn() }

// interface checks
var (
	_ liveHandle = (*os.File)(nil)
	_ liveHandle = (*net.TCPListener)(nil)
	_ liveHandle = (*net.UnixListener)(nil)
	_ liveHandle = (*net.UDPConn)(nil)
	_ liveHandle = (*net.UnixConn)(nil)
	_ liveHandle = (*net.TCPConn)(nil)
)
