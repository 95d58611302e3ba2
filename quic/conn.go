package quic

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/reserved"
	quicgo "github.com/quic-go/quic-go"
)

// PacketConn is a UDP socket of a molt inventory shared by the generations
// of a QUIC service: a net.PacketConn for quic-go's Transport (see
// [PacketConn.Transport]) that gives it only the datagrams of this
// generation's connections and of new ones, and forwards those of older
// generations, which still drain, to them.
//
// Exactly one generation reads the socket at a time: generation 1 from the
// start, a successor once its [molt.Upgrader.Ready] has returned; its
// parent stops just before it sends the ACK and reads again only if it
// takes the service back (a failed upgrade, a rollback). Every generation
// writes to the socket directly, so replies of a draining generation leave
// from the service's own address without a detour.
type PacketConn struct {
	u      *molt.Upgrader
	handle net.PacketConn // molt's handle of the shared socket: its Close releases the entry
	udp    *net.UDPConn   // this package's descriptor of the same socket
	gen    uint32
	ids    *idCipher
	keys   *keys
	inbox  *inbox
	older  *olderGenerations
	log    atomic.Pointer[slog.Logger]

	in chan packet // to ReadFrom: this generation's datagrams

	mu     sync.Mutex
	cond   sync.Cond // signalled when mode or parked changes
	mode   readMode
	inRead bool // the socket reader is in a read of the shared socket

	deadline deadline

	transportOnce sync.Once
	transport     *quicgo.Transport

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup
	unhook    []func()

	stats counters
}

// readMode says whether this generation reads the shared socket.
type readMode int

const (
	modeWaiting readMode = iota // a successor before its Ready returned
	modeReading                 // this generation serves
	modeYielded                 // a successor reads it; this one drains
	modeClosed
)

// packet is one datagram on its way to quic-go.
type packet struct {
	buf  *[]byte
	n    int
	addr netip.AddrPort
}

// maxDatagram bounds the datagrams this package reads: more than any QUIC
// packet quic-go sends or accepts (1452 bytes unless MTU discovery finds
// more, up to 1500 on Ethernet).
const maxDatagram = 2048

var bufPool = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// ListenPacket returns the UDP socket for network ("udp", "udp4" or
// "udp6") and addr of u's inventory, inherited from the previous
// generation or new (see [molt.Upgrader.ListenPacket]), ready for QUIC
// connections that survive upgrades. Call it before [molt.Upgrader.Ready],
// in every generation, and give the result to quic-go through
// [PacketConn.Transport]. A successor also claims here, from the
// inventory, the keys the first generation made and the channels to the
// older generations that still drain.
func ListenPacket(u *molt.Upgrader, network, addr string) (*PacketConn, error) {
	switch network {
	case "udp", "udp4", "udp6":
	default:
		return nil, fmt.Errorf("molt/quic: network %q is not UDP", network)
	}
	if err := supported(); err != nil {
		return nil, err
	}
	if reserved.OnYield == nil {
		return nil, errors.New("molt/quic: this molt has no yield hooks: use the molt of this module's go.mod")
	}
	switch st := u.State(); st {
	case molt.StateStarting, molt.StateReady:
	default:
		// Upgrading or later: this generation may have yielded the socket
		// already, and must not become a second reader.
		return nil, fmt.Errorf("molt/quic: ListenPacket in state %s (call it before Ready, or while serving)", st)
	}
	k, err := loadKeys(u)
	if err != nil {
		return nil, err
	}
	ids, err := newIDCipher(k.connID[:])
	if err != nil {
		return nil, err
	}
	h, err := u.ListenPacket(network, addr)
	if err != nil {
		return nil, err
	}
	udp, err := dupUDP(h)
	if err != nil {
		h.Close()
		return nil, err
	}
	// Room for the datagrams that arrive while the socket changes readers
	// (the kernel caps this at net.core.rmem_max).
	udp.SetReadBuffer(4 << 20)

	c := &PacketConn{
		u:      u,
		handle: h,
		udp:    udp,
		gen:    uint32(u.Generation()),
		ids:    ids,
		keys:   k,
		in:     make(chan packet, 256),
		closed: make(chan struct{}),
	}
	c.cond.L = &c.mu
	c.SetLogger(nil)
	c.deadline.init()
	base := channelBase(udp.LocalAddr())
	if c.older, err = claimOlder(u, base, c.gen, c.logger); err == nil {
		c.inbox, err = newInbox(u, base, c.gen)
	}
	if err != nil {
		c.older.close()
		udp.Close()
		h.Close()
		return nil, err
	}

	// A successor reads the socket once its Ready returned: its parent has
	// stopped by then (the yield hook runs before the ACK).
	started := make(chan struct{})
	var once sync.Once
	start := func() { once.Do(func() { close(started) }) }
	c.unhook = append(c.unhook, u.Observe(func(ev molt.Event) {
		if ev.Kind == molt.EventReady {
			start()
		}
	}))
	if !u.HasParent() || u.State() != molt.StateStarting {
		start()
	}
	c.unhook = append(c.unhook, reserved.OnYield(u, c.yield, c.resume))

	c.wg.Add(2)
	go c.readSocket(started)
	go c.inbox.read(c)
	return c, nil
}

// channelBase is the prefix of the inventory names of the channels to the
// generations that share the socket at local.
func channelBase(local net.Addr) string { return "molt/quic/" + local.String() + "/gen/" }

// Transport returns the quic-go Transport on c (the same one on every
// call), with the connection IDs, the stateless-reset key and the token key
// of the service's generations. Set its other fields before its first
// Listen or Dial; do not change Conn, ConnectionIDGenerator,
// ConnectionIDLength, StatelessResetKey or TokenGeneratorKey. Closing the
// Transport does not close c.
func (c *PacketConn) Transport() *quicgo.Transport {
	c.transportOnce.Do(func() {
		reset, token := c.keys.reset, c.keys.tokenGen
		c.transport = &quicgo.Transport{
			Conn:                  c,
			ConnectionIDGenerator: &idGenerator{c: c.ids, gen: c.gen},
			StatelessResetKey:     &reset,
			TokenGeneratorKey:     &token,
		}
	})
	return c.transport
}

// SetLogger sets where c logs what it drops and which older generations it
// stops forwarding to. Nil means silent (the default).
func (c *PacketConn) SetLogger(l *slog.Logger) {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	c.log.Store(l)
}

func (c *PacketConn) logger() *slog.Logger { return c.log.Load() }

// readSocket reads the shared socket while this generation is its reader,
// and routes each datagram by the generation its connection ID names.
func (c *PacketConn) readSocket(started <-chan struct{}) {
	defer c.wg.Done()
	select {
	case <-started:
	case <-c.closed:
		return
	}
	c.mu.Lock()
	if c.mode == modeWaiting {
		c.mode = modeReading
	}
	c.mu.Unlock()
	bp := bufPool.Get().(*[]byte)
	defer func() { bufPool.Put(bp) }()
	for {
		if !c.awaitReading() {
			return
		}
		n, addr, err := c.udp.ReadFromUDPAddrPort(*bp)
		c.mu.Lock()
		c.inRead = false
		c.cond.Broadcast()
		c.mu.Unlock()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // a yield (or Close): awaitReading says which
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			c.logger().Warn("molt/quic: reading the shared socket", "err", err)
			continue
		}
		c.stats.received.Add(1)
		if c.route(bp, n, addr) {
			bp = bufPool.Get().(*[]byte) // the old one went to quic-go
		}
	}
}

// awaitReading waits while another generation reads the socket, and
// reports false once c is closed; on true, a read may start (inRead).
func (c *PacketConn) awaitReading() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.mode == modeYielded {
		c.cond.Wait()
	}
	c.inRead = c.mode != modeClosed
	return c.inRead
}

// route hands the n bytes in *bp, read from the shared socket, to the
// generation that issued their destination connection ID: forwarded to
// an older one that still runs, or delivered to this one (its own, the
// client's first choice for a new connection, and anything no living
// generation owns, which quic-go answers as QUIC says: a stateless reset
// for a short header). It reports whether *bp now belongs to quic-go.
func (c *PacketConn) route(bp *[]byte, n int, from netip.AddrPort) (delivered bool) {
	b := (*bp)[:n]
	if id := destConnID(b); id != nil {
		if g, ok := c.ids.open(id); ok && g != c.gen {
			switch c.older.forward(g, b, from) {
			case forwarded:
				c.stats.forwarded.Add(1)
				return false
			case dropped:
				c.stats.forwardDropped.Add(1)
				return false
			}
			n = len(padForReset(b))
		}
	}
	return c.deliver(bp, n, from)
}

// resetTrigger is the size up to which padForReset pads: above quic-go's
// 42 bytes (protocol.MinStatelessResetSize), under which it sends no
// stateless reset.
const resetTrigger = 64

// padForReset pads a short-header datagram of a generation that is gone
// to resetTrigger bytes. A client waiting for an answer on such a
// connection sends only small packets (ACKs, PINGs), which quic-go would
// drop without a reset, so the client would learn only at its idle
// timeout; padded, they get one at once. Only datagrams whose connection
// ID one of the service's generations issued (checked with the shared
// key) are padded, so nobody else can make this generation send resets,
// and a reset is never more than three times the size of what the client
// sent (RFC 9000 §10.3: no reset loops, no amplification).
func padForReset(b []byte) []byte {
	if len(b) >= resetTrigger || b[0]&0x80 != 0 || cap(b) < resetTrigger {
		return b
	}
	n := len(b)
	b = b[:resetTrigger]
	clear(b[n:])
	return b
}

// deliver queues the n bytes in *bp for quic-go, waiting while its queue
// is full: the kernel's buffers hold what arrives meanwhile (a successor's
// send finds the channel full and drops). A yield does not wait for it
// (only for a read under way), so a Transport that stopped reading cannot
// hold an upgrade up. It reports whether *bp now belongs to quic-go.
func (c *PacketConn) deliver(bp *[]byte, n int, from netip.AddrPort) bool {
	select {
	case c.in <- packet{buf: bp, n: n, addr: from}:
		return true
	case <-c.closed:
		return false
	}
}

// yield stops this generation reading the shared socket: a successor
// reads it from now on. It returns once no read is under way.
func (c *PacketConn) yield() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mode != modeReading {
		if c.mode == modeWaiting {
			c.mode = modeYielded
		}
		return
	}
	c.mode = modeYielded
	c.udp.SetReadDeadline(time.Unix(1, 0)) // wakes a read under way
	for c.inRead {
		c.cond.Wait()
	}
}

// resume makes this generation read the shared socket again: it took the
// service back from a successor.
func (c *PacketConn) resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mode != modeYielded {
		return
	}
	c.udp.SetReadDeadline(time.Time{})
	c.mode = modeReading
	c.cond.Broadcast()
	c.logger().Info("molt/quic: reading the shared socket again", "addr", c.udp.LocalAddr())
}

// ReadFrom returns the next datagram for this generation's connections.
func (c *PacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case pk := <-c.in:
		n := copy(p, (*pk.buf)[:pk.n])
		bufPool.Put(pk.buf)
		return n, net.UDPAddrFromAddrPort(pk.addr), nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	case <-c.deadline.wait():
		return 0, nil, os.ErrDeadlineExceeded
	}
}

// WriteTo sends p from the shared socket, in every generation.
func (c *PacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	return c.udp.WriteTo(p, addr)
}

// SetReadBuffer sets the shared socket's receive buffer (quic-go asks for
// 7 MiB; the kernel caps it at net.core.rmem_max).
func (c *PacketConn) SetReadBuffer(bytes int) error { return c.udp.SetReadBuffer(bytes) }

// SetWriteBuffer sets the shared socket's send buffer.
func (c *PacketConn) SetWriteBuffer(bytes int) error { return c.udp.SetWriteBuffer(bytes) }

// SyscallConn gives access to the shared socket, for socket options
// (quic-go sets Don't Fragment through it). Reading from it directly
// would take datagrams from every generation.
func (c *PacketConn) SyscallConn() (syscall.RawConn, error) { return c.udp.SyscallConn() }

// LocalAddr returns the shared socket's address.
func (c *PacketConn) LocalAddr() net.Addr { return c.udp.LocalAddr() }

// SetDeadline sets the read and write deadlines.
func (c *PacketConn) SetDeadline(t time.Time) error {
	c.deadline.set(t)
	return c.udp.SetWriteDeadline(t)
}

// SetReadDeadline bounds ReadFrom.
func (c *PacketConn) SetReadDeadline(t time.Time) error {
	c.deadline.set(t)
	return nil
}

// SetWriteDeadline bounds WriteTo.
func (c *PacketConn) SetWriteDeadline(t time.Time) error { return c.udp.SetWriteDeadline(t) }

// Close stops reading, closes this generation's descriptors and releases
// the socket's inventory entry (as [molt.Upgrader.ListenPacket]'s Close
// does). In a draining generation, close it once its connections are
// done: older generations' datagrams reach it through it until then.
func (c *PacketConn) Close() error {
	c.closeOnce.Do(func() {
		// Closed first: a yield under way (it holds the hooks' lock,
		// which the unhooking takes) sees it and returns.
		c.mu.Lock()
		c.mode = modeClosed
		c.cond.Broadcast()
		c.mu.Unlock()
		close(c.closed)
		c.udp.SetReadDeadline(time.Unix(1, 0))
		for _, f := range c.unhook {
			f()
		}
		c.inbox.close()
		c.wg.Wait()
		c.older.close()
		c.udp.Close()
		c.handle.Close()
		for {
			select {
			case pk := <-c.in:
				bufPool.Put(pk.buf)
				continue
			default:
			}
			break
		}
	})
	return nil
}

// Stats counts datagrams since ListenPacket.
type Stats struct {
	Received       uint64   // read from the shared socket
	Forwarded      uint64   // of those, sent on to an older generation
	ForwardDropped uint64   // of those, dropped: that generation's channel was full
	FromSuccessor  uint64   // received from a successor, for this generation's connections
	Older          []uint32 // the older generations this one forwards to
}

type counters struct {
	received, forwarded, forwardDropped, fromSuccessor atomic.Uint64
}

// Stats returns c's counters.
func (c *PacketConn) Stats() Stats {
	return Stats{
		Received:       c.stats.received.Load(),
		Forwarded:      c.stats.forwarded.Load(),
		ForwardDropped: c.stats.forwardDropped.Load(),
		FromSuccessor:  c.stats.fromSuccessor.Load(),
		Older:          c.older.generations(),
	}
}
