package molt

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// Listen returns a listener for network ("tcp", "tcp4", "tcp6", "unix" or
// "unixpacket") and addr: the one inherited from the previous generation
// under the same canonical address if there is one, a new one otherwise.
//
// Addresses are compared as the kernel binds them: with network "tcp",
// ":8080", "0.0.0.0:8080" and "[::]:8080" are one socket; a host name is
// resolved once, before anything is locked. A ":0" listener keeps the port
// the kernel chose for the first generation. Listeners with the same
// address (SO_REUSEPORT, ":0") are matched in the order they were created.
// While the inventory is still arriving (see [New]), Listen waits until
// the entry it claims is in, or until the whole inventory is and none
// matched; if the transfer failed, it returns that error instead of
// creating a socket the parent may still hold.
//
// Closing the returned listener removes it from the inventory and closes the
// socket in this process; the port stays open only if a successor holds it.
// Unix socket files are never removed by Go's own Close: molt removes them
// when the generation that serves them closes them, and never while another
// generation may serve them.
//
// The listener's Accept also returns the idle connections the previous
// generation handed over ([HandOver]). The connections it returns wrap the
// kernel's so that they can be handed over in turn; their NetConn method
// returns the *net.TCPConn or *net.UnixConn, and the listener's
// SyscallConn gives access to the listening socket.
//
// Listen fails with [ErrUpgradeInProgress], [ErrUpgraded] or [ErrStopped] in
// those states.
func (u *Upgrader) Listen(network, addr string) (net.Listener, error) {
	return u.ListenWith(context.Background(), nil, network, addr)
}

// ListenWith is [Upgrader.Listen] with the net.ListenConfig used to create a
// socket that is not inherited (nil means [Options.ListenConfig]); use its
// Control field to set socket options. ctx bounds the creation only.
func (u *Upgrader) ListenWith(ctx context.Context, lc *net.ListenConfig, network, addr string) (net.Listener, error) {
	sa, err := canonicalAddr(network, addr, false)
	if err != nil {
		return nil, err
	}
	return listenOn(u.inv, handoff.KindListener, sa, net.FileListener, func() (net.Listener, error) {
		return u.listenConfig(lc).Listen(ctx, sa.network, sa.bind)
	})
}

// ListenPacket returns a packet socket for network ("udp", "udp4", "udp6"
// or "unixgram") and addr, inherited or new, under the same rules as
// [Upgrader.Listen]. Closing it releases the inventory entry.
func (u *Upgrader) ListenPacket(network, addr string) (net.PacketConn, error) {
	return u.ListenPacketWith(context.Background(), nil, network, addr)
}

// ListenPacketWith is [Upgrader.ListenPacket] with the net.ListenConfig used
// to create a socket that is not inherited (nil means [Options.ListenConfig]).
func (u *Upgrader) ListenPacketWith(ctx context.Context, lc *net.ListenConfig, network, addr string) (net.PacketConn, error) {
	sa, err := canonicalAddr(network, addr, true)
	if err != nil {
		return nil, err
	}
	return listenOn(u.inv, handoff.KindPacketConn, sa, net.FilePacketConn, func() (net.PacketConn, error) {
		return u.listenConfig(lc).ListenPacket(ctx, sa.network, sa.bind)
	})
}

func (u *Upgrader) listenConfig(lc *net.ListenConfig) *net.ListenConfig {
	if lc != nil {
		return lc
	}
	if u.opts.ListenConfig != nil {
		return u.opts.ListenConfig
	}
	return &net.ListenConfig{}
}

// AddListener puts a listener this process made itself (from systemd, a
// custom socket) into the inventory under name, so the next generation can
// claim it with [Upgrader.Listener]. The Upgrader takes ownership of ln:
// use the returned listener, whose Close releases the entry. molt never
// removes the socket file of a Unix listener added this way: it belongs to
// whoever created it. ln must implement syscall.Conn (every
// *net.TCPListener and *net.UnixListener does). It fails with
// [ErrNameInUse] if a listener with that name is already in the inventory,
// inherited ones included, and with [ErrReservedName] for a name that
// begins with "molt/" or "systemd/": those belong to molt's own packages
// (control keeps its history under "molt/", systemd the sockets systemd
// passed under "systemd/"). The look-ups find such entries too.
func (u *Upgrader) AddListener(name string, ln net.Listener) (net.Listener, error) {
	return addNamed(u.inv, handoff.KindListener, name, ln, ln.Addr, false)
}

// AddPacketConn is [Upgrader.AddListener] for a packet socket.
func (u *Upgrader) AddPacketConn(name string, pc net.PacketConn) (net.PacketConn, error) {
	return addNamed(u.inv, handoff.KindPacketConn, name, pc, pc.LocalAddr, false)
}

// AddConn puts a connected socket into the inventory under name; the next
// generation claims it with [Upgrader.Conn] and continues the same
// connection. The Upgrader takes ownership of c: use the returned conn.
func (u *Upgrader) AddConn(name string, c net.Conn) (net.Conn, error) {
	return addNamed(u.inv, handoff.KindConn, name, c, c.LocalAddr, false)
}

// AddFile puts any open file (a pipe, a memfd, a lock file) into the
// inventory under name; the next generation claims it with [Upgrader.File].
// The Upgrader takes ownership of f and closes it in [Upgrader.Stop]; a file
// closed earlier is left out of the next hand-off.
func (u *Upgrader) AddFile(name string, f *os.File) error {
	return u.inv.addFile(name, f, false)
}

// Listener returns the listener named name: inherited from the previous
// generation (claimed by this call), or added with [Upgrader.AddListener]
// in this one. It fails with [ErrNotFound] if there is none.
func (u *Upgrader) Listener(name string) (net.Listener, error) {
	h, err := u.inv.lookup(handoff.KindListener, name)
	if err != nil {
		return nil, err
	}
	return h.(net.Listener), nil
}

// PacketConn is [Upgrader.Listener] for packet sockets.
func (u *Upgrader) PacketConn(name string) (net.PacketConn, error) {
	h, err := u.inv.lookup(handoff.KindPacketConn, name)
	if err != nil {
		return nil, err
	}
	return h.(net.PacketConn), nil
}

// Conn is [Upgrader.Listener] for connected sockets.
func (u *Upgrader) Conn(name string) (net.Conn, error) {
	h, err := u.inv.lookup(handoff.KindConn, name)
	if err != nil {
		return nil, err
	}
	return h.(net.Conn), nil
}

// File is [Upgrader.Listener] for files. The Upgrader keeps ownership of
// the returned file and closes it in [Upgrader.Stop].
func (u *Upgrader) File(name string) (*os.File, error) {
	h, err := u.inv.lookup(handoff.KindFile, name)
	if err != nil {
		return nil, err
	}
	return h.(*os.File), nil
}

// reservedPrefixes begin the inventory names of molt's own packages.
var reservedPrefixes = [...]string{"molt/", "systemd/"}

// checkName refuses a name under a reserved prefix, unless one of molt's
// own packages adds it (reserved).
func checkName(name string, reserved bool) error {
	if reserved {
		return nil
	}
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(name, p) {
			return fmt.Errorf("%w: %q starts with %q", ErrReservedName, name, p)
		}
	}
	return nil
}

// EntryKind names the kind of an inventory entry in [EntryStats].
type EntryKind string

// The kinds of inventory entries.
const (
	EntryListener   EntryKind = "listener"
	EntryPacketConn EntryKind = "packet-conn"
	EntryConn       EntryKind = "conn"
	EntryFile       EntryKind = "file"
)

// entryKind is the EntryKind of an entry of kind k: the same word as k's
// own String.
func entryKind(k handoff.Kind) EntryKind { return EntryKind(k.String()) }

// The wrappers below are what the Listen, Add and look-up methods return.
// Their Close releases the inventory entry, so a closed listener really
// closes its port (unless a successor holds a copy) instead of leaving a
// socket that accepts into nowhere. Every other method is the embedded
// object's own.

// listener also returns, from Accept, the connections the parent handed
// over (see HandOver).
type listener struct {
	net.Listener
	inv *inventory
	e   *entry

	mu     sync.Mutex // protects queue and closed
	queue  []net.Conn // connections the parent handed over, not yet accepted
	closed bool
	wake   chan struct{} // poked by push and Close for an Accept waiting out a pause
}

func newListener(ln net.Listener, inv *inventory, e *entry) *listener {
	return &listener{Listener: ln, inv: inv, e: e, wake: make(chan struct{}, 1)}
}

// Accept returns the next connection: one the parent generation handed
// over (see HandOver), or a new one from the kernel. Connections are
// wrapped so that they can be handed over in turn. During a probation it
// takes none from the kernel (see pauseAccept).
func (l *listener) Accept() (net.Conn, error) {
	for {
		if c := l.pop(); c != nil {
			return c, nil
		}
		if resumed := l.inv.acceptPaused(); resumed != nil {
			if err := l.awaitResume(resumed); err != nil {
				return nil, err
			}
			continue
		}
		c, err := l.Listener.Accept()
		if err != nil {
			if isTimeout(err) && !l.isClosed() {
				// push or a pause woke us with a deadline in the past
				// (nobody else can set one on this listener): clear it,
				// take the queue, look for the pause.
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
	l.poke()
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
	l.poke()
	return l.inv.release(l.e)
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
		if err := passOn(l.inv.send, c.(*acceptedConn), l.e.connWire()); err != nil {
			l.inv.log.Warn("molt: handed-over connection reached a closed listener", "entry", l.e.describe(), "err", err)
		}
		c.Close()
	}
}

// SyscallConn gives access to the listening socket (for socket options).
func (l *listener) SyscallConn() (syscall.RawConn, error) {
	return l.Listener.(syscall.Conn).SyscallConn()
}

type packetConn struct {
	net.PacketConn
	inv *inventory
	e   *entry
}

func (c *packetConn) Close() error { return c.inv.release(c.e) }

// SyscallConn gives access to the socket (for socket options).
func (c *packetConn) SyscallConn() (syscall.RawConn, error) {
	return c.PacketConn.(syscall.Conn).SyscallConn()
}

type conn struct {
	net.Conn
	inv *inventory
	e   *entry
}

func (c *conn) Close() error { return c.inv.release(c.e) }

// SyscallConn gives access to the socket (for socket options).
func (c *conn) SyscallConn() (syscall.RawConn, error) { return c.Conn.(syscall.Conn).SyscallConn() }

// interface checks
var (
	_ liveHandle = (*os.File)(nil)
	_ liveHandle = (*net.TCPListener)(nil)
	_ liveHandle = (*net.UnixListener)(nil)
	_ liveHandle = (*net.UDPConn)(nil)
	_ liveHandle = (*net.UnixConn)(nil)
	_ liveHandle = (*net.TCPConn)(nil)
)
