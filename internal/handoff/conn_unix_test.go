//go:build unix

package handoff

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moltgo/molt/internal/proctest"
)

// pipePair returns both ends of a Pair as Conns, the child end through FromFD.
func pipePair(t testing.TB) (parent, child *Conn) {
	t.Helper()
	parent, cf, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := dupFD(cf.Fd()) // cf is a blocking file, not a net.Conn
	cf.Close()
	if err != nil {
		parent.Close()
		t.Fatal(err)
	}
	child, err = FromFD(fd, os.Getpid())
	if err != nil {
		parent.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { parent.Close(); child.Close() })
	return parent, child
}

// rawPair returns a Conn and a raw *net.UnixConn peer for hand-made frames.
func rawPair(t testing.TB) (*Conn, *net.UnixConn) {
	t.Helper()
	c, cf, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	fc, err := net.FileConn(cf)
	cf.Close()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	peer := fc.(*net.UnixConn)
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

// tempFD opens a new temporary file and returns its descriptor, closed at cleanup.
func tempFD(t testing.TB, name string) int {
	t.Helper()
	fd, err := unix.Open(filepath.Join(t.TempDir(), name), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// dupOf returns a close-on-exec duplicate of a socket's descriptor, closed at
// cleanup. It does not use File(), which would make the socket blocking.
func dupOf(t testing.TB, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	dup := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { dup, derr = dupFD(fd) }); err != nil {
		t.Fatal(err)
	}
	if derr != nil {
		t.Fatal(derr)
	}
	t.Cleanup(func() { unix.Close(dup) })
	return dup
}

// dupFD returns a close-on-exec duplicate of fd. (The tests start no
// processes, so the dup and the flag need not be atomic; AIX has no
// F_DUPFD_CLOEXEC.)
func dupFD(fd uintptr) (int, error) {
	dup, err := unix.Dup(int(fd))
	if err != nil {
		return -1, err
	}
	unix.CloseOnExec(dup)
	return dup, nil
}

// identity returns the (st_dev, st_ino) of fd.
func identity(t testing.TB, fd int) [2]uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("fstat(%d): %v", fd, err)
	}
	return [2]uint64{uint64(st.Dev), uint64(st.Ino)}
}

func isCloexec(t testing.TB, fd int) bool {
	t.Helper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatalf("fcntl(%d): %v", fd, err)
	}
	return flags&unix.FD_CLOEXEC != 0
}

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// send writes b and oob with one WriteMsgUnix call and checks it was complete.
func send(t testing.TB, peer *net.UnixConn, b []byte, fds ...int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, _, err := peer.WriteMsgUnix(b, oob, nil)
	if err != nil || n != len(b) {
		t.Fatalf("WriteMsgUnix = %d, %v; want %d, nil", n, err, len(b))
	}
}

// entries returns n file entries and n copies of fd.
func entries(n, fd int) ([]Entry, []int) {
	es := make([]Entry, n)
	fds := make([]int, n)
	for i := range es {
		es[i] = Entry{Kind: KindFile, Name: fmt.Sprintf("file-%d", i)}
		fds[i] = fd
	}
	return es, fds
}

// wantMalformed checks that err wraps ErrMalformed and contains want.
func wantMalformed(t testing.TB, err error, want string) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), want) {
		t.Fatalf("got error %v, want ErrMalformed containing %q", err, want)
	}
}

func TestConversation(t *testing.T) {
	parent, child := pipePair(t)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	sent := []int{
		dupOf(t, ln.(*net.TCPListener)),
		dupOf(t, pc.(*net.UDPConn)),
		tempFD(t, "a"),
		tempFD(t, "b"),
	}
	es := []Entry{
		{Kind: KindListener, Network: "tcp", Addr: ln.Addr().String()},
		{Kind: KindPacketConn, Network: "udp", Addr: pc.LocalAddr().String()},
		{Kind: KindFile, Name: "a"},
		{Kind: KindFile, Name: "b", PathDev: 1, PathIno: 2},
	}
	hello := Hello{Generation: 7, ParentPID: os.Getpid(), Entries: len(es)}

	errc := make(chan error, 1)
	go func() {
		if err := parent.SendHello(hello); err != nil {
			errc <- err
			return
		}
		errc <- parent.SendInventory(es, sent)
	}()

	child.SetDeadline(time.Now().Add(10 * time.Second))
	h, err := child.RecvHello()
	if err != nil {
		t.Fatal(err)
	}
	if h != hello {
		t.Fatalf("RecvHello = %+v, want %+v", h, hello)
	}
	ges, gfds, err := child.RecvInventory(h.Entries)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	defer closeFDs(gfds[1:])
	if len(ges) != len(es) || len(gfds) != len(es) {
		t.Fatalf("got %d entries and %d fds, want %d", len(ges), len(gfds), len(es))
	}
	for i := range es {
		if ges[i] != es[i] {
			t.Errorf("entry %d = %+v, want %+v", i, ges[i], es[i])
		}
		if got, want := identity(t, gfds[i]), identity(t, sent[i]); got != want {
			t.Errorf("fd for entry %d has identity %v, want %v", i, got, want)
		}
		if !isCloexec(t, gfds[i]) {
			t.Errorf("fd %d for entry %d is not close-on-exec", gfds[i], i)
		}
	}

	// The received listener accepts connections made to the original.
	lf := os.NewFile(uintptr(gfds[0]), "listener")
	ln2, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	dialed := make(chan struct{})
	go func() {
		defer close(dialed)
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			c.Close()
		}
	}()
	defer func() { <-dialed }()
	ln2.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	if c, err := ln2.Accept(); err != nil {
		t.Fatalf("accept on received listener: %v", err)
	} else {
		c.Close()
	}

	// READY, FAILED, ACK, then end of stream.
	parent.SetDeadline(time.Now().Add(10 * time.Second))
	if err := child.SendReady(); err != nil {
		t.Fatal(err)
	}
	if err := child.SendFailed("init: boom"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []Message{{Type: TypeReady}, {Type: TypeFailed, Reason: "init: boom"}} {
		if m, err := parent.RecvMessage(); err != nil || !reflect.DeepEqual(m, want) {
			t.Fatalf("RecvMessage = %+v, %v; want %+v", m, err, want)
		}
	}
	if err := parent.SendAck(); err != nil {
		t.Fatal(err)
	}
	if m, err := child.RecvMessage(); err != nil || !reflect.DeepEqual(m, Message{Type: TypeAck}) {
		t.Fatalf("RecvMessage = %+v, %v; want ACK", m, err)
	}
	parent.Close()
	if _, err := child.RecvMessage(); err != io.EOF {
		t.Fatalf("after the parent closed: got %v, want io.EOF", err)
	}
	if _, err := child.RecvMessage(); err != io.EOF {
		t.Fatalf("second read after the parent closed: got %v, want io.EOF", err)
	}
}

func TestInventoryManyEntries(t *testing.T) {
	parent, child := pipePair(t)
	fd := tempFD(t, "shared")
	es, fds := entries(1000, fd)
	errc := make(chan error, 1)
	go func() { errc <- parent.SendInventory(es, fds) }()
	child.SetReadDeadline(time.Now().Add(20 * time.Second))
	ges, gfds, err := child.RecvInventory(len(es))
	if err != nil {
		t.Fatal(err)
	}
	defer closeFDs(gfds)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	want := identity(t, fd)
	seen := map[int]bool{}
	for i := range es {
		if ges[i] != es[i] {
			t.Fatalf("entry %d = %+v, want %+v", i, ges[i], es[i])
		}
		if identity(t, gfds[i]) != want || seen[gfds[i]] || !isCloexec(t, gfds[i]) {
			t.Fatalf("fd %d for entry %d: wrong file, duplicate, or not close-on-exec", gfds[i], i)
		}
		seen[gfds[i]] = true
	}
}

// TestSendInventoryBatches reads the frames SendInventory writes by hand and
// checks that every batch's descriptors arrive with its header.
func TestSendInventoryBatches(t *testing.T) {
	big := strings.Repeat("n", 400<<10)
	for _, tc := range []struct {
		name    string
		es      []Entry
		batches []int
	}{
		{"1000 small", func() []Entry { es, _ := entries(1000, 0); return es }(), []int{200, 200, 200, 200, 200}},
		{"201 small", func() []Entry { es, _ := entries(201, 0); return es }(), []int{200, 1}},
		{"split by size", []Entry{{Kind: KindFile, Name: big}, {Kind: KindFile, Name: big}, {Kind: KindFile, Name: big}}, []int{2, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := rawPair(t)
			fd := tempFD(t, "f")
			fds := make([]int, len(tc.es))
			for i := range fds {
				fds[i] = fd
			}
			errc := make(chan error, 1)
			go func() { errc <- c.SendInventory(tc.es, fds) }()
			peer.SetReadDeadline(time.Now().Add(20 * time.Second))
			oob := make([]byte, unix.CmsgSpace(4*MaxFDsPerMessage))
			i := 0
			for b, want := range tc.batches {
				var hdr [6]byte
				n, oobn, _, _, err := peer.ReadMsgUnix(hdr[:], oob)
				if err != nil || n != 6 {
					t.Fatalf("batch %d: header read %d, %v", b, n, err)
				}
				got := rights(oob[:oobn])
				closeFDs(got)
				if len(got) != want {
					t.Fatalf("batch %d: %d descriptors with the header, want %d", b, len(got), want)
				}
				typ, plen, err := ParseHeader(hdr)
				if err != nil || typ != TypeInventory {
					t.Fatalf("batch %d: ParseHeader = %v, %v", b, typ, err)
				}
				p := make([]byte, plen)
				if _, err := io.ReadFull(peer, p); err != nil {
					t.Fatal(err)
				}
				es, err := UnmarshalEntries(p)
				if err != nil || len(es) != want {
					t.Fatalf("batch %d: %d entries, %v; want %d", b, len(es), err, want)
				}
				for _, e := range es {
					if e != tc.es[i] {
						t.Fatalf("entry %d differs", i)
					}
					i++
				}
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSendInventoryErrors(t *testing.T) {
	c, peer := rawPair(t)
	fd := tempFD(t, "f")
	for _, tc := range []struct {
		name string
		es   []Entry
		fds  []int
		want string
	}{
		{"count mismatch", []Entry{{Kind: KindFile}}, nil, "1 entries but 0 descriptors"},
		{"bad kind", []Entry{{Kind: KindFile}, {Kind: 0}}, []int{fd, fd}, "entry 1 has unknown kind 0"},
		{"negative fd", []Entry{{Kind: KindFile}}, []int{-1}, "invalid descriptor -1"},
		{"entry too large", []Entry{{Kind: KindFile}, {Kind: KindFile, Name: strings.Repeat("x", MaxPayload)}}, []int{fd, fd}, "entry 1 (file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.SendInventory(tc.es, tc.fds)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if err := c.SendHello(Hello{ParentPID: -1}); err == nil {
		t.Errorf("SendHello accepted a negative pid")
	}
	if err := c.SendHello(Hello{Entries: MaxEntries + 1}); err == nil {
		t.Errorf("SendHello accepted too many entries")
	}
	if err := c.SendInventory(nil, nil); err != nil {
		t.Errorf("SendInventory(nil, nil) = %v", err)
	}
	// Nothing was written by any of the failed calls.
	c.Close()
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("peer read %d, %v; want io.EOF", n, err)
	}
}

func TestRecvInventoryZero(t *testing.T) {
	c, _ := rawPair(t)
	c.SetReadDeadline(time.Now().Add(-time.Second)) // any read would fail
	es, fds, err := c.RecvInventory(0)
	if es != nil || fds != nil || err != nil {
		t.Fatalf("RecvInventory(0) = %v, %v, %v", es, fds, err)
	}
}

// errorCase is a peer misbehaving; recv runs the receiving side and returns
// its error; want is checked against it.
type errorCase struct {
	name  string
	peer  func(t *testing.T, peer *net.UnixConn, fd int)
	recv  func(c *Conn) error
	check func(t *testing.T, err error)
}

func recvHello(c *Conn) error { _, err := c.RecvHello(); return err }
func recvMessage(c *Conn) error {
	_, err := c.RecvMessage()
	return err
}
func recvInventory(n int) func(c *Conn) error {
	return func(c *Conn) error {
		es, fds, err := c.RecvInventory(n)
		if err == nil {
			closeFDs(fds)
			return fmt.Errorf("RecvInventory succeeded with %d entries", len(es))
		}
		if es != nil || fds != nil {
			return fmt.Errorf("RecvInventory returned entries or fds with %v", err)
		}
		return err
	}
}
func malformedWith(want string) func(t *testing.T, err error) {
	return func(t *testing.T, err error) { t.Helper(); wantMalformed(t, err, want) }
}
func isErr(target error) func(t *testing.T, err error) {
	return func(t *testing.T, err error) {
		t.Helper()
		if !errors.Is(err, target) {
			t.Fatalf("got %v, want %v", err, target)
		}
	}
}

func inventoryFrame(n int) []byte {
	es, _ := entries(n, 0)
	return AppendFrame(nil, TypeInventory, MarshalEntries(es))
}

func repeat(fd, n int) []int {
	fds := make([]int, n)
	for i := range fds {
		fds[i] = fd
	}
	return fds
}

var errorCases = []errorCase{
	{
		name:  "fewer fds than entries",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, inventoryFrame(3), fd) },
		recv:  recvInventory(3),
		check: malformedWith("inventory batch of 3 entries arrived with 1 descriptor"),
	},
	{
		name:  "no fds at all",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, inventoryFrame(2)) },
		recv:  recvInventory(2),
		check: malformedWith("inventory batch of 2 entries arrived with 0 descriptors"),
	},
	{
		name:  "more fds than entries",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, inventoryFrame(2), repeat(fd, 5)...) },
		recv:  recvInventory(2),
		check: malformedWith("inventory batch of 2 entries arrived with 5 descriptors"),
	},
	{
		name:  "more entries than announced",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, inventoryFrame(3), repeat(fd, 3)...) },
		recv:  recvInventory(2),
		check: malformedWith("inventory batch of 3 entries exceeds the 2 still expected"),
	},
	{
		name: "bad second batch",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			send(t, p, inventoryFrame(2), fd, fd)
			send(t, p, AppendFrame(nil, TypeInventory, []byte{1, 9, 0, 0, 0, 0, 0}), fd)
		},
		recv:  recvInventory(3),
		check: malformedWith("entry 0 has unknown kind 9"),
	},
	{
		name: "stream ends after first batch",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			send(t, p, inventoryFrame(2), fd, fd)
			p.Close()
		},
		recv:  recvInventory(4),
		check: isErr(io.EOF),
	},
	{
		name: "stream ends inside a batch",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			f := inventoryFrame(2)
			send(t, p, f[:len(f)-3], fd, fd)
			p.Close()
		},
		recv:  recvInventory(2),
		check: isErr(io.ErrUnexpectedEOF),
	},
	{
		name:  "empty batch",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, inventoryFrame(0)) },
		recv:  recvInventory(1),
		check: malformedWith("empty inventory batch"),
	},
	{
		name:  "READY instead of INVENTORY",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, AppendFrame(nil, TypeReady, nil)) },
		recv:  recvInventory(1),
		check: malformedWith("expected INVENTORY, got READY"),
	},
	{
		name: "too many fds: MSG_CTRUNC",
		peer: func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, inventoryFrame(250), repeat(fd, 250)...) },
		recv: recvInventory(250),
		check: func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "MSG_CTRUNC") {
				t.Fatalf("got %v, want an error naming MSG_CTRUNC", err)
			}
		},
	},
	{
		name:  "READY instead of HELLO",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, AppendFrame(nil, TypeReady, nil)) },
		recv:  recvHello,
		check: malformedWith("expected HELLO, got READY"),
	},
	{
		name:  "INVENTORY with fds instead of HELLO",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, inventoryFrame(2), fd, fd) },
		recv:  recvHello,
		check: malformedWith("expected HELLO, got INVENTORY"),
	},
	{
		name: "HELLO with fds",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			send(t, p, AppendFrame(nil, TypeHello, Hello{Entries: 1}.Marshal()), fd)
		},
		recv:  recvHello,
		check: malformedWith("HELLO frame arrived with 1 descriptor"),
	},
	{
		name:  "bad HELLO payload",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, AppendFrame(nil, TypeHello, uv(1, 1<<40, 0))) },
		recv:  recvHello,
		check: malformedWith("does not fit in 32 bits"),
	},
	{
		name:  "INVENTORY as a message",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, inventoryFrame(1), fd) },
		recv:  recvMessage,
		check: malformedWith("unexpected INVENTORY frame"),
	},
	{
		name: "HELLO as a message",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			send(t, p, AppendFrame(nil, TypeHello, Hello{}.Marshal()))
		},
		recv:  recvMessage,
		check: malformedWith("unexpected HELLO frame"),
	},
	{
		name:  "READY with fds",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, AppendFrame(nil, TypeReady, nil), fd, fd) },
		recv:  recvMessage,
		check: malformedWith("READY frame arrived with 2 descriptors"),
	},
	{
		name:  "ACK with payload",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, AppendFrame(nil, TypeAck, []byte{0})) },
		recv:  recvMessage,
		check: malformedWith("ACK frame with a payload of 1 bytes"),
	},
	{
		name:  "bad FAILED payload",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, AppendFrame(nil, TypeFailed, uv(100))) },
		recv:  recvMessage,
		check: malformedWith("reason of 100 bytes exceeds the 0 bytes left"),
	},
	{
		name: "oversized frame",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			send(t, p, []byte{0, 0x4c, 0x4b, 0x42, Version, byte(TypeFailed)})
		},
		recv:  recvMessage,
		check: malformedWith("payload of 5000000 bytes exceeds 1048576"),
	},
	{
		name:  "unknown type",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, []byte{0, 0, 0, 2, Version, 42}) },
		recv:  recvMessage,
		check: malformedWith("unknown frame type 42"),
	},
	{
		name: "version mismatch with fds",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			f := inventoryFrame(1)
			f[4] = 2
			send(t, p, f, fd)
		},
		recv: recvInventory(1),
		check: func(t *testing.T, err error) {
			var ve *VersionError
			if !errors.As(err, &ve) || ve.Got != 2 || ve.Want != Version {
				t.Fatalf("got %v, want *VersionError{2, 1}", err)
			}
		},
	},
	{
		name:  "clean EOF",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { p.Close() },
		recv:  recvMessage,
		check: isErr(io.EOF),
	},
	{
		name: "EOF inside the header",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			send(t, p, []byte{0, 0, 0})
			p.Close()
		},
		recv:  recvMessage,
		check: isErr(io.ErrUnexpectedEOF),
	},
	{
		name: "EOF inside the payload",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			send(t, p, AppendFrame(nil, TypeFailed, MarshalReason("abcdef"))[:9])
			p.Close()
		},
		recv:  recvMessage,
		check: isErr(io.ErrUnexpectedEOF),
	},
}

func runErrorCases(t *testing.T) {
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := rawPair(t)
			fd := tempFD(t, "f")
			tc.peer(t, peer, fd)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			err := tc.recv(c)
			tc.check(t, err)
			if q := c.drain(); len(q) != 0 {
				t.Fatalf("%d descriptors left queued", len(q))
			}
			// A broken stream stays broken: the next read fails the same way.
			if err2 := tc.recv(c); err2 != err {
				t.Fatalf("second receive: got %v, want %v", err2, err)
			}
		})
	}
}

func TestErrorPaths(t *testing.T) { runErrorCases(t) }

func TestVersionMismatch(t *testing.T) {
	c, peer := rawPair(t)
	send(t, peer, []byte{0, 0, 0, 5, 2, byte(TypeHello), 0, 0, 0})
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.RecvHello()
	var ve *VersionError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v, want a *VersionError", err)
	}
	if *ve != (VersionError{Got: 2, Want: 1}) {
		t.Fatalf("got %+v", *ve)
	}
	if want := "handoff: peer speaks protocol version 2, this process speaks 1"; err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
}

func TestDeadlineAtBoundaryKeepsConnUsable(t *testing.T) {
	c, peer := rawPair(t)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.RecvMessage(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	send(t, peer, AppendFrame(nil, TypeReady, nil))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if m, err := c.RecvMessage(); err != nil || m.Type != TypeReady {
		t.Fatalf("after a timeout: %+v, %v; want READY", m, err)
	}
}

func TestDeadlineInsideFrameBreaksConn(t *testing.T) {
	c, peer := rawPair(t)
	f := AppendFrame(nil, TypeFailed, MarshalReason("abc"))
	send(t, peer, f[:7])
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := c.RecvMessage()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	send(t, peer, f[7:])
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err2 := c.RecvMessage(); err2 != err {
		t.Fatalf("after a timeout inside a frame: %v; want the same error %v", err2, err)
	}
}

// TestCloseUnblocksRecv: Close from another goroutine ends a RecvMessage
// that is blocked, with no deadline, waiting for a frame that never
// comes. The receiver is seen parked on the socket before Close is
// called, so the test fails if RecvMessage never blocked.
func TestCloseUnblocksRecv(t *testing.T) {
	c, _ := rawPair(t)
	id := make(chan int)
	errc := make(chan error, 1)
	go func() {
		id <- proctest.GoroutineID()
		_, err := c.RecvMessage()
		errc <- err
	}()
	if state := proctest.WaitBlocked(t, <-id, "handoff.(*Conn).RecvMessage"); state != "IO wait" {
		t.Fatalf("RecvMessage blocked in state %q, want IO wait (parked on the socket)", state)
	}
	select {
	case err := <-errc:
		t.Fatalf("RecvMessage returned %v before Close", err)
	default:
	}
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("got %v, want net.ErrClosed", err)
		}
	case <-time.After(proctest.Patience):
		t.Fatal("Close did not unblock RecvMessage")
	}
}

func TestPairEnds(t *testing.T) {
	parent, child, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	defer child.Close()
	var fd int
	var nonblock bool
	rc, err := child.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(u uintptr) {
		fd = int(u)
		fl, _ := unix.FcntlInt(u, unix.F_GETFL, 0)
		nonblock = fl&unix.O_NONBLOCK != 0
	})
	if nonblock {
		t.Errorf("child end is non-blocking, want blocking")
	}
	if !isCloexec(t, fd) {
		t.Errorf("child end is not close-on-exec")
	}
	pfd := dupOf(t, parent.uc)
	if fl, _ := unix.FcntlInt(uintptr(pfd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
		t.Errorf("parent end is blocking, want non-blocking")
	}
}

func TestFromFD(t *testing.T) {
	t.Run("regular file", func(t *testing.T) {
		fd, err := unix.Open(filepath.Join(t.TempDir(), "f"), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		_, err = FromFD(fd, os.Getpid())
		if want := fmt.Sprintf("handoff: fd %d is not a socket (it is a regular file)", fd); err == nil || err.Error() != want {
			t.Fatalf("got %v, want %q", err, want)
		}
		if !isOpen(fd) {
			t.Fatalf("FromFD closed fd %d, which it refused", fd)
		}
		unix.Close(fd)
	})
	t.Run("pipe", func(t *testing.T) {
		var p [2]int
		if err := unix.Pipe(p[:]); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(p[1])
		defer unix.Close(p[0])
		_, err := FromFD(p[0], os.Getpid())
		if err == nil || !strings.Contains(err.Error(), "is not a socket (it is a pipe)") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("closed fd", func(t *testing.T) {
		fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		_, err = FromFD(fd, os.Getpid())
		if want := fmt.Sprintf("handoff: fd %d is not open", fd); err == nil || err.Error() != want {
			t.Fatalf("got %v, want %q", err, want)
		}
		if _, err := FromFD(-1, os.Getpid()); err == nil {
			t.Fatalf("FromFD(-1) succeeded")
		}
	})
	t.Run("udp socket", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		rc, _ := pc.(*net.UDPConn).SyscallConn()
		var dup int
		rc.Control(func(u uintptr) { dup, _ = dupFD(u) })
		_, err = FromFD(dup, os.Getpid())
		if want := fmt.Sprintf("handoff: fd %d is a datagram socket, not a stream socket", dup); err == nil || err.Error() != want {
			t.Fatalf("got %v, want %q", err, want)
		}
		if !isOpen(dup) {
			t.Fatalf("FromFD closed fd %d, which it refused", dup)
		}
		unix.Close(dup)
	})
	t.Run("tcp socket", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		rc, _ := ln.(*net.TCPListener).SyscallConn()
		var dup int
		rc.Control(func(u uintptr) { dup, _ = dupFD(u) })
		defer unix.Close(dup)
		_, err = FromFD(dup, os.Getpid())
		if want := fmt.Sprintf("handoff: fd %d is an IPv4 socket, not a Unix domain socket", dup); err == nil || err.Error() != want {
			t.Fatalf("got %v, want %q", err, want)
		}
	})
	for fd, name := range []string{"standard input", "standard output", "standard error"} {
		t.Run(name, func(t *testing.T) {
			// Nothing is asked of the descriptor: its state stays what it is.
			_, err := FromFD(fd, os.Getpid())
			if want := fmt.Sprintf("handoff: fd %d is %s, never the hand-off channel", fd, name); err == nil || err.Error() != want {
				t.Fatalf("got %v, want %q", err, want)
			}
			if !isOpen(fd) {
				t.Fatalf("fd %d closed", fd)
			}
		})
	}
	t.Run("socket connected to a path", func(t *testing.T) {
		// As stdout is under journald: a Unix stream socket, but not a pair.
		path := filepath.Join(t.TempDir(), "journal")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		// No SOCK_CLOEXEC on darwin; these tests start no processes.
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.CloseOnExec(fd)
		defer unix.Close(fd)
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			t.Fatal(err)
		}
		_, err = FromFD(fd, os.Getpid())
		if want := fmt.Sprintf("handoff: fd %d is connected to %s, not to its parent", fd, path); err == nil || err.Error() != want {
			t.Fatalf("got %v, want %q", err, want)
		}
		assertUntouched(t, fd, ln)
	})
	t.Run("pair of another process", func(t *testing.T) {
		// This process made the pair and runs; it is not the named parent.
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0) // no SOCK_CLOEXEC on darwin
		if err != nil {
			t.Fatal(err)
		}
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
		defer unix.Close(fds[0])
		defer unix.Close(fds[1])
		other := os.Getppid()
		_, err = FromFD(fds[1], other)
		if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
			if err != nil {
				t.Fatalf("got %v; want success where the peer process is unknown", err)
			}
			return
		}
		if want := fmt.Sprintf("handoff: fd %d belongs to process %d, not to the parent %d", fds[1], os.Getpid(), other); err == nil || err.Error() != want {
			t.Fatalf("got %v, want %q", err, want)
		}
		if !isOpen(fds[1]) {
			t.Fatalf("FromFD closed fd %d, which it refused", fds[1])
		}
		// Nothing was written into it.
		unix.SetNonblock(fds[0], true)
		if n, err := unix.Read(fds[0], make([]byte, 16)); n > 0 || !errors.Is(err, unix.EAGAIN) {
			t.Fatalf("the peer read %d bytes (%v), want none", n, err)
		}
	})
	t.Run("unix stream socket", func(t *testing.T) {
		parent, cf, err := Pair()
		if err != nil {
			t.Fatal(err)
		}
		defer parent.Close()
		fd, err := dupFD(cf.Fd())
		cf.Close()
		if err != nil {
			t.Fatal(err)
		}
		child, err := FromFD(fd, os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		defer child.Close()
		if isOpen(fd) {
			t.Errorf("FromFD left the original fd %d open", fd)
		}
		if err := parent.SendReady(); err != nil {
			t.Fatal(err)
		}
		child.SetReadDeadline(time.Now().Add(10 * time.Second))
		if m, err := child.RecvMessage(); err != nil || m.Type != TypeReady {
			t.Fatalf("RecvMessage = %+v, %v", m, err)
		}
	})
}

// assertUntouched checks that fd, connected to ln, is still open and that
// nothing was written into it: the first byte ln's side reads is the one
// written now.
func assertUntouched(t *testing.T, fd int, ln net.Listener) {
	t.Helper()
	if !isOpen(fd) {
		t.Fatalf("fd %d was closed", fd)
	}
	if _, err := unix.Write(fd, []byte{'!'}); err != nil {
		t.Fatalf("write to fd %d: %v", fd, err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 16)
	n, err := c.Read(b)
	if err != nil || string(b[:n]) != "!" {
		t.Fatalf("the peer read %q (%v), want only the byte written after the check", b[:n], err)
	}
}

// TestNoFDLeak runs the error paths and FromFD failures and checks that the
// number of open descriptors is unchanged.
func TestNoFDLeak(t *testing.T) {
	// Warm up: the network poller opens its descriptors on first use.
	c, _ := rawPair(t)
	c.Close()
	before := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs)
	t.Run("errors", runErrorCases)
	t.Run("fromfd", TestFromFD)
	t.Run("conversation", TestConversation)
	t.Run("many", TestInventoryManyEntries)
	t.Run("timeout", TestRecvInventoryTimeoutAfterBatch)
	t.Run("send errors", TestSendInventoryErrors)
	if after := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs); after != before {
		t.Fatalf("%d descriptors open before, %d after", before, after)
	}
}

func TestRights(t *testing.T) {
	full := unix.UnixRights(10, 11, 12)
	two := unix.UnixRights(20, 21)
	for _, tc := range []struct {
		name string
		oob  []byte
		want []int
	}{
		{"empty", nil, nil},
		{"one message", full, []int{10, 11, 12}},
		{"two messages", append(append([]byte{}, two...), full...), []int{20, 21, 10, 11, 12}},
		// Darwin leaves cmsg_len at the untruncated size after MSG_CTRUNC.
		{"truncated", full[:unix.CmsgLen(8)], []int{10, 11}},
		{"second truncated", append(append([]byte{}, two...), full[:unix.CmsgLen(4)]...), []int{20, 21, 10}},
		{"header only", full[:unix.CmsgLen(0)], nil},
		{"shorter than a header", full[:3], nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := rights(tc.oob)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRecvInventoryTimeoutAfterBatch checks that a deadline passing after
// part of an inventory arrived closes that part and breaks the Conn.
func TestRecvInventoryTimeoutAfterBatch(t *testing.T) {
	c, peer := rawPair(t)
	fd := tempFD(t, "f")
	send(t, peer, inventoryFrame(2), fd, fd)
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, _, err := c.RecvInventory(3)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	send(t, peer, inventoryFrame(1), fd)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err2 := c.RecvInventory(1); err2 != err {
		t.Fatalf("retry: got %v, want the first error again", err2)
	}
}

// TestRecvInventoryBatches checks that batches are delivered as they
// arrive, in order, and that those delivered before an error stay the
// caller's while the rest is closed.
func TestRecvInventoryBatches(t *testing.T) {
	c, peer := rawPair(t)
	fd := tempFD(t, "f")
	send(t, peer, inventoryFrame(2), fd, fd)
	send(t, peer, inventoryFrame(1), fd)
	before := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs)
	var sizes []int
	var kept []int
	// The third batch announces 2 entries but carries one descriptor.
	send(t, peer, inventoryFrame(2), fd)
	err := c.RecvInventoryBatches(5, func(es []Entry, fds []int) {
		if len(es) != len(fds) {
			t.Errorf("batch of %d entries with %d descriptors", len(es), len(fds))
		}
		sizes = append(sizes, len(es))
		kept = append(kept, fds...)
	})
	wantMalformed(t, err, "arrived with 1 descriptor")
	if fmt.Sprint(sizes) != "[2 1]" {
		t.Errorf("batches delivered: %v, want [2 1]", sizes)
	}
	for _, k := range kept {
		if !isOpen(k) || identity(t, k) != identity(t, fd) {
			t.Errorf("delivered descriptor %d is not the file sent", k)
		}
		unix.Close(k)
	}
	if got := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs); got != before {
		t.Errorf("%d descriptors after the error and closing the delivered ones, want %d", got, before)
	}
}
