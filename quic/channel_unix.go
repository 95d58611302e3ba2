//go:build unix

package quic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/reserved"
	"golang.org/x/sys/unix"
)

// The channels between generations. Each generation makes a SOCK_SEQPACKET
// socket pair for the datagrams that newer generations forward to it (its
// inbox): it reads one end and puts the other in the inventory under
// channelBase+generation, so that every later generation inherits it, and
// hands it on for as long as the generation it leads to lives. A socket
// pair keeps each datagram whole, and tells the holders of the sending
// end when the reader is gone: a read on that end ends (EOF), and a send
// fails.

func supported() error { return nil }

// header precedes each forwarded datagram: the client's address.
//
//	family (4 or 6) | address (16 bytes) | port (2 bytes, big endian)
const headerLen = 19

func putHeader(h *[headerLen]byte, a netip.AddrPort) {
	h[0] = 6
	if a.Addr().Is4() {
		h[0] = 4
	}
	ip := a.Addr().As16()
	copy(h[1:17], ip[:])
	binary.BigEndian.PutUint16(h[17:19], a.Port())
}

func parseHeader(b []byte) (netip.AddrPort, bool) {
	if len(b) < headerLen {
		return netip.AddrPort{}, false
	}
	ip := netip.AddrFrom16([16]byte(b[1:17]))
	switch b[0] {
	case 4:
		ip = ip.Unmap()
	case 6:
	default:
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[17:19])), true
}

// dupUDP returns a *net.UDPConn on a duplicate of h's descriptor.
func dupUDP(h net.PacketConn) (*net.UDPConn, error) {
	sc, ok := h.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("molt/quic: %T has no descriptor", h)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var f *os.File
	cerr := rc.Control(func(fd uintptr) {
		var nfd int
		if nfd, err = dupCloexec(int(fd)); err == nil {
			f = os.NewFile(uintptr(nfd), "molt-quic-udp")
		}
	})
	if cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, os.NewSyscallError("dup", err)
	}
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, err
	}
	u, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("molt/quic: the socket at %s is not a UDP socket", h.LocalAddr())
	}
	return u, nil
}

func dupCloexec(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) }

// socketPair returns the two ends of a new SOCK_SEQPACKET pair.
func socketPair() (recv, send *net.UnixConn, err error) {
	fds, err := seqpacketPair()
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "molt-quic-channel")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			if i == 0 {
				unix.Close(fds[1])
			}
			return nil, nil, err
		}
		conns[i] = c.(*net.UnixConn)
	}
	// Room for the datagrams of a busy draining generation; the kernel
	// caps it at net.core.wmem_max.
	conns[1].SetWriteBuffer(4 << 20)
	return conns[0], conns[1], nil
}

// inbox is where this generation receives the datagrams of its
// connections once a successor reads the shared socket.
type inbox struct {
	recv *net.UnixConn
	send net.PacketConn // molt's handle of the sending end: its Close releases the entry
}

func newInbox(u *molt.Upgrader, base string, gen uint32) (*inbox, error) {
	recv, send, err := socketPair()
	if err != nil {
		return nil, err
	}
	h, err := reserved.AddPacketConn(u, base+strconv.FormatUint(uint64(gen), 10), send)
	if err != nil {
		recv.Close()
		send.Close()
		return nil, fmt.Errorf("molt/quic: %w", err)
	}
	return &inbox{recv: recv, send: h}, nil
}

// read delivers what successors forward, until the inbox is closed.
func (in *inbox) read(c *PacketConn) {
	defer c.wg.Done()
	rc, err := in.recv.SyscallConn()
	if err != nil {
		c.logger().Error("molt/quic: the inbox has no descriptor", "err", err)
		return
	}
	for {
		bp := bufPool.Get().(*[]byte)
		b := *bp
		var h [headerLen]byte // one message: the header into h, the datagram into b
		n, err := unixRecv(rc, h[:], b)
		if err != nil {
			bufPool.Put(bp)
			if !errors.Is(err, net.ErrClosed) {
				// Closing the inbox tells the successors (their sends
				// fail), which stop forwarding: the clients then get
				// stateless resets instead of silence.
				c.logger().Error("molt/quic: reading forwarded datagrams; closing the inbox", "err", err)
				in.recv.Close()
			}
			return
		}
		from, ok := parseHeader(h[:])
		if !ok || n <= 0 {
			bufPool.Put(bp)
			continue
		}
		c.stats.fromSuccessor.Add(1)
		if !c.deliver(bp, n, from) {
			bufPool.Put(bp)
		}
	}
}

func (in *inbox) close() {
	if in != nil {
		in.recv.Close()
		in.send.Close()
	}
}

// unixRecv reads one message from rc into h, then b (a scatter read), and
// returns the length of its part in b.
func unixRecv(rc syscall.RawConn, h, b []byte) (int, error) {
	var total int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		total, _, _, _, rerr = unix.RecvmsgBuffers(int(fd), [][]byte{h, b}, nil, 0)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, os.NewSyscallError("recvmsg", rerr)
	}
	if total == 0 {
		return 0, net.ErrClosed // every sending end closed
	}
	return total - len(h), nil
}

// olderGenerations are the channels to the older generations that still
// drain, by generation.
type olderGenerations struct {
	log      func() *slog.Logger
	mu       sync.Mutex
	gens     map[uint32]*channel
	watchers sync.WaitGroup
}

type channel struct {
	gen       uint32
	conn      net.PacketConn // molt's handle: Close releases the inventory entry
	raw       syscall.RawConn
	closeOnce sync.Once
}

// claimOlder claims the sending ends the previous generation handed on.
func claimOlder(u *molt.Upgrader, base string, self uint32, log func() *slog.Logger) (*olderGenerations, error) {
	o := &olderGenerations{log: log, gens: make(map[uint32]*channel)}
	if !u.HasParent() {
		return o, nil
	}
	// A look-up that matches nothing returns once the whole inventory is
	// in; then the statistics list every entry.
	if _, err := u.PacketConn(base + "none"); !errors.Is(err, molt.ErrNotFound) {
		if err == nil {
			err = errors.New("unexpected entry")
		}
		return nil, fmt.Errorf("molt/quic: waiting for the inventory: %w", err)
	}
	for _, e := range u.Stats().Inventory {
		rest, ok := strings.CutPrefix(e.Name, base)
		if !ok || e.Kind != molt.EntryPacketConn {
			continue
		}
		g, err := strconv.ParseUint(rest, 10, 32)
		if err != nil || uint32(g) >= self {
			continue
		}
		pc, err := u.PacketConn(e.Name)
		if err != nil {
			o.close()
			return nil, fmt.Errorf("molt/quic: channel to generation %d: %w", g, err)
		}
		rc, err := pc.(syscall.Conn).SyscallConn()
		if err != nil {
			pc.Close()
			o.close()
			return nil, err
		}
		ch := &channel{gen: uint32(g), conn: pc, raw: rc}
		o.mu.Lock()
		o.gens[ch.gen] = ch
		o.mu.Unlock()
		o.watchers.Add(1)
		go o.watch(ch)
	}
	return o, nil
}

// watch drops ch once the generation it leads to is gone: nobody sends on
// the reading end, so a read on this end returns only then (EOF), or when
// this process closes ch.
func (o *olderGenerations) watch(ch *channel) {
	defer o.watchers.Done()
	var b [1]byte
	ch.raw.Read(func(fd uintptr) bool {
		_, err := unix.Read(int(fd), b[:])
		return err != unix.EAGAIN
	})
	o.drop(ch, "it ended")
}

func (o *olderGenerations) drop(ch *channel, why string) {
	o.mu.Lock()
	found := o.gens[ch.gen] == ch
	if found {
		delete(o.gens, ch.gen)
	}
	o.mu.Unlock()
	if found && o.log != nil {
		o.log().Info("molt/quic: stopped forwarding to an older generation", "generation", ch.gen, "why", why)
	}
	ch.closeOnce.Do(func() { ch.conn.Close() })
}

type forwardResult int

const (
	notForwarded forwardResult = iota // no such generation (any more): deliver here
	forwarded
	dropped // its channel is full: lost, as on a congested path
)

// forward sends b, from client from, to generation g.
func (o *olderGenerations) forward(g uint32, b []byte, from netip.AddrPort) forwardResult {
	o.mu.Lock()
	ch := o.gens[g]
	o.mu.Unlock()
	if ch == nil {
		return notForwarded
	}
	var h [headerLen]byte
	putHeader(&h, from)
	var serr error
	err := ch.raw.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgBuffers(int(fd), [][]byte{h[:], b}, nil, nil, unix.MSG_DONTWAIT|msgNoSignal)
		return true // never wait: a full channel drops, as a full socket buffer does
	})
	switch {
	case err == nil && serr == nil:
		return forwarded
	case err == nil && (serr == unix.EAGAIN || serr == unix.ENOBUFS):
		return dropped
	}
	why := "closed"
	if serr != nil {
		why = serr.Error()
	}
	o.drop(ch, why) // the generation is gone (EPIPE, ECONNRESET) or ch closed
	return notForwarded
}

func (o *olderGenerations) generations() []uint32 {
	if o == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	gs := make([]uint32, 0, len(o.gens))
	for g := range o.gens {
		gs = append(gs, g)
	}
	slices.Sort(gs)
	return gs
}

func (o *olderGenerations) close() {
	if o == nil {
		return
	}
	o.mu.Lock()
	chs := make([]*channel, 0, len(o.gens))
	for _, ch := range o.gens {
		chs = append(chs, ch)
	}
	o.gens = map[uint32]*channel{}
	o.mu.Unlock()
	for _, ch := range chs {
		ch.closeOnce.Do(func() { ch.conn.Close() })
	}
	o.watchers.Wait()
}
