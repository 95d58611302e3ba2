//go:build unix

package quic

import (
	"bytes"
	"net/netip"
	"testing"
)

// The cost of forwarding, in one process: the serving generation's
// routing of a datagram read from the shared socket (decrypting its
// connection ID, then a send on the channel) to the older generation's
// ReadFrom, against the routing of a datagram of its own connections
// straight to its own ReadFrom. sequential: one datagram at a time, so
// ns/op is the latency a datagram sees; pipelined: routing and reading
// in two goroutines, so ns/op is the cost per datagram under a stream.

func benchConn(b *testing.B, ids *idCipher, gen uint32) *PacketConn {
	c := &PacketConn{gen: gen, ids: ids, in: make(chan packet, 256), closed: make(chan struct{}),
		older: &olderGenerations{gens: map[uint32]*channel{}}}
	c.SetLogger(nil)
	return c
}

func BenchmarkForward(b *testing.B) {
	ids, _ := newIDCipher(bytes.Repeat([]byte{7}, 16))
	old := benchConn(b, ids, 1)
	cur := benchConn(b, ids, 2)
	recv, send, err := socketPair()
	if err != nil {
		b.Fatal(err)
	}
	defer send.Close()
	old.inbox = &inbox{recv: recv}
	old.wg.Add(1)
	go old.inbox.read(old)
	defer old.inbox.close()
	raw, _ := send.SyscallConn()
	cur.older.gens[1] = &channel{gen: 1, conn: send, raw: raw}

	from := netip.MustParseAddrPort("127.0.0.1:40000")
	datagram := func(gen uint32) []byte {
		d := make([]byte, 1200) // a full-size QUIC packet
		d[0] = 0x40             // short header
		id, _ := ids.seal(gen)
		copy(d[1:], id[:])
		return d
	}
	p := make([]byte, maxDatagram)
	for _, bc := range []struct {
		name   string
		gen    uint32
		reader *PacketConn
	}{
		{"own", 2, cur},
		{"forwarded", 1, old},
	} {
		d := datagram(bc.gen)
		// route routes d once; a datagram the full channel dropped is
		// routed again, so that every one reaches the reader
		route := func() {
			for range 1_000_000 { // bounded: a reader that stalls ends the benchmark
				drops := cur.stats.forwardDropped.Load()
				bp := bufPool.Get().(*[]byte)
				n := copy(*bp, d)
				if !cur.route(bp, n, from) {
					bufPool.Put(bp)
				}
				if cur.stats.forwardDropped.Load() == drops {
					return
				}
			}
			panic("the channel stayed full")
		}
		b.Run(bc.name+"/sequential", func(b *testing.B) {
			b.SetBytes(int64(len(d)))
			for b.Loop() {
				route()
				if _, _, err := bc.reader.ReadFrom(p); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/pipelined", func(b *testing.B) {
			b.SetBytes(int64(len(d)))
			n := b.N
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range n {
					bc.reader.ReadFrom(p)
				}
			}()
			b.ResetTimer()
			for range n {
				route()
			}
			<-done
		})
	}
	if st := cur.Stats(); st.ForwardDropped != 0 {
		b.Logf("%d datagrams found the channel full and were routed again", st.ForwardDropped)
	}
}

// BenchmarkOpenConnID is the routing decision alone: one AES block.
func BenchmarkOpenConnID(b *testing.B) {
	ids, _ := newIDCipher(bytes.Repeat([]byte{7}, 16))
	id, _ := ids.seal(3)
	for b.Loop() {
		if g, ok := ids.open(id[:]); !ok || g != 3 {
			b.Fatal(g, ok)
		}
	}
}
