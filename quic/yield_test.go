//go:build unix

package quic

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/moltgo/molt/internal/proctest"
)

// testConn is a PacketConn on a fresh loopback UDP socket, reading it
// already, without molt: for the reader's own logic.
func testConn(t *testing.T, queue int) (*PacketConn, *net.UDPConn) {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := newIDCipher(bytes.Repeat([]byte{9}, 16))
	c := &PacketConn{handle: udp, udp: udp, gen: 1, ids: ids, in: make(chan packet, queue),
		closed: make(chan struct{}), older: &olderGenerations{gens: map[uint32]*channel{}}}
	c.cond.L = &c.mu
	c.SetLogger(nil)
	c.deadline.init()
	started := make(chan struct{})
	close(started)
	c.wg.Add(1)
	go c.readSocket(started)
	client, err := net.DialUDP("udp", nil, udp.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); c.Close() })
	return c, client
}

// A yield returns although quic-go reads nothing (its Transport closed
// first): it waits only for a read of the socket under way, not for
// quic-go. After it, this generation reads nothing more — a reader of its
// own, standing for the successor, gets every datagram — until resume.
func TestYieldWithoutQuicGoReading(t *testing.T) {
	c, client := testConn(t, 2)
	for range 5 {
		client.Write([]byte("before"))
	}
	proctest.WaitUntil(t, "the reader blocked on quic-go's full queue", func() bool {
		return c.stats.received.Load() >= 3 // 2 queued, 1 waiting
	})
	yielded := make(chan struct{})
	go func() { c.yield(); close(yielded) }()
	select {
	case <-yielded:
	case <-time.After(proctest.Patience):
		t.Fatal("yield waited for quic-go to read")
	}

	// the successor's reader: a descriptor of the same socket
	f, err := c.udp.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	succ := pc.(*net.UDPConn)
	// what the kernel still holds from before, then three sent after the yield
	for range 3 {
		client.Write([]byte("after"))
	}
	succ.SetReadDeadline(time.Now().Add(proctest.Patience))
	after := 0
	buf := make([]byte, 64)
	for after < 3 {
		n, err := succ.Read(buf)
		if err != nil {
			t.Fatalf("the successor's reader: %v (got %d of the 3 datagrams sent after the yield)", err, after)
		}
		if string(buf[:n]) == "after" {
			after++
		}
	}

	// resume: this generation reads again
	c.resume()
	client.Write([]byte("resumed"))
	c.SetReadDeadline(time.Now().Add(proctest.Patience))
	// what was queued before the yield comes first
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after resume: %v", err)
		}
		if string(buf[:n]) == "resumed" {
			break
		}
	}
}

// Close returns while the reader waits for quic-go, and a yield after it
// returns at once.
func TestCloseWhileQuicGoNotReading(t *testing.T) {
	c, client := testConn(t, 1)
	for range 3 {
		client.Write([]byte("x"))
	}
	proctest.WaitUntil(t, "the reader blocked on quic-go's full queue", func() bool {
		return c.stats.received.Load() >= 2
	})
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(proctest.Patience):
		t.Fatal("Close waited for quic-go to read")
	}
	c.yield()
	c.resume()
	if _, _, err := c.ReadFrom(make([]byte, 8)); err == nil {
		t.Error("ReadFrom after Close returned no error")
	}
}
