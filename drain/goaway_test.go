package drain_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/moltgo/molt/drain"
	"github.com/moltgo/molt/internal/proctest"
)

// rawH2 is an HTTP/2 client that does what Go's own does not: it never
// resends a stream, and it accounts for every stream whose HEADERS it
// wrote. Go's client silently resends a stream above a GOAWAY's last
// stream id on a new connection, which hides exactly the loss the
// two-phase GOAWAY prevents.
//
// It opens GET / streams back to back, at most depth at a time, until it
// reads a GOAWAY; it acknowledges SETTINGS and PINGs as a client must. It
// writes every frame under wmu and reads a GOAWAY's effect under wmu too,
// so no stream follows on the wire a PING ACK sent after a GOAWAY.
type rawH2 struct {
	conn    net.Conn
	scheme  byte // HPACK static index: 0x86 http, 0x87 https
	wmu     sync.Mutex
	stopped bool // a GOAWAY was read: open no more streams
	next    uint32

	mu       sync.Mutex // guards the fields below
	open     map[uint32]bool
	sent     int
	answered int
	goAways  []uint32 // last stream ids, in order
	failures []string
	free     chan struct{} // a stream slot became free
	ended    chan struct{} // the reader has finished
}

func dialRawH2(t *testing.T, addr string, tlsOn bool) *rawH2 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	scheme := byte(0x86)
	if tlsOn {
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Fatalf("ALPN chose %q, want h2", p)
		}
		c, scheme = tc, 0x87
	}
	h := &rawH2{conn: c, scheme: scheme, next: 1, open: make(map[uint32]bool),
		free: make(chan struct{}, 1), ended: make(chan struct{})}
	// Preface, empty SETTINGS, and a connection window that never runs out.
	pre := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	pre = appendRawFrame(pre, 0x4, 0, 0, nil)
	pre = appendRawFrame(pre, 0x8, 0, 0, binary.BigEndian.AppendUint32(nil, 1<<30))
	if _, err := c.Write(pre); err != nil {
		t.Fatal(err)
	}
	go h.read()
	return h
}

func appendRawFrame(b []byte, typ, flags byte, stream uint32, payload []byte) []byte {
	b = append(b, byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload)), typ, flags)
	b = binary.BigEndian.AppendUint32(b, stream)
	return append(b, payload...)
}

// run opens streams until a GOAWAY, max streams or the deadline, then
// waits for the connection to end.
func (h *rawH2) run(depth, max int, deadline time.Time) {
	for range max {
		for {
			h.mu.Lock()
			n := len(h.open)
			h.mu.Unlock()
			if n < depth {
				break
			}
			select {
			case <-h.free:
			case <-h.ended:
				return
			}
		}
		if time.Now().After(deadline) || !h.openStream() {
			break
		}
	}
	<-h.ended
}

// openStream writes the HEADERS of one GET / unless a GOAWAY was read.
func (h *rawH2) openStream() bool {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if h.stopped {
		return false
	}
	id := h.next
	h.next += 2
	// :method GET, :scheme, :path /, then :authority as a literal
	// without indexing (name index 1).
	block := []byte{0x82, h.scheme, 0x84, 0x01, 9}
	block = append(block, "127.0.0.1"...)
	h.mu.Lock()
	h.open[id] = true
	h.sent++
	h.mu.Unlock()
	_, err := h.conn.Write(appendRawFrame(nil, 0x1, 0x1|0x4, id, block))
	return err == nil
}

func (h *rawH2) write(b []byte) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	h.conn.Write(b)
}

func (h *rawH2) read() {
	defer close(h.ended)
	defer h.conn.Close()
	var hdr [9]byte
	for {
		if _, err := io.ReadFull(h.conn, hdr[:]); err != nil {
			h.endOpen("the connection ended without a response")
			return
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		typ, flags, stream := hdr[3], hdr[4], binary.BigEndian.Uint32(hdr[5:])&(1<<31-1)
		p := make([]byte, n)
		if _, err := io.ReadFull(h.conn, p); err != nil {
			h.endOpen("the connection ended inside a frame")
			return
		}
		switch typ {
		case 0x0: // DATA
			if flags&0x1 != 0 {
				h.finish(stream, "")
			}
		case 0x1: // HEADERS: :status 200 is static index 8, 0x88
			switch {
			case len(p) == 0 || p[0] != 0x88:
				h.finish(stream, fmt.Sprintf("stream %d: a response that is not 200 (% x)", stream, p))
			case flags&0x1 != 0:
				h.finish(stream, "")
			}
		case 0x3: // RST_STREAM
			h.finish(stream, fmt.Sprintf("stream %d reset, code %d", stream, binary.BigEndian.Uint32(p)))
		case 0x4: // SETTINGS
			if flags&0x1 == 0 {
				h.write(appendRawFrame(nil, 0x4, 0x1, 0, nil))
			}
		case 0x6: // PING
			if flags&0x1 == 0 {
				h.write(appendRawFrame(nil, 0x6, 0x1, 0, p))
			}
		case 0x7: // GOAWAY
			last := binary.BigEndian.Uint32(p) & (1<<31 - 1)
			h.wmu.Lock()
			h.stopped = true
			h.wmu.Unlock()
			h.mu.Lock()
			h.goAways = append(h.goAways, last)
			for id := range h.open {
				if id > last {
					h.failures = append(h.failures, fmt.Sprintf("stream %d above the GOAWAY's last stream id %d: never processed", id, last))
					delete(h.open, id)
				}
			}
			h.mu.Unlock()
		}
	}
}

func (h *rawH2) finish(stream uint32, failure string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.open[stream] {
		return
	}
	delete(h.open, stream)
	if failure != "" {
		h.failures = append(h.failures, failure)
	} else {
		h.answered++
	}
	select {
	case h.free <- struct{}{}:
	default:
	}
}

func (h *rawH2) endOpen(why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range h.open {
		h.failures = append(h.failures, fmt.Sprintf("stream %d: %s", id, why))
	}
	clear(h.open)
}

func (h *rawH2) counts() (sent, answered int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sent, h.answered
}

// TestHTTP2GoAwayLosesNoStream drains a server while clients that never
// retry keep HTTP/2 streams in flight, and requires every stream they
// sent to be answered. With only net/http's single GOAWAY, the streams
// still on the wire when it is sent are above its last stream id and are
// never processed.
func TestHTTP2GoAwayLosesNoStream(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		name := "h2c"
		if tlsOn {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			goroutines := runtime.NumGoroutine()
			// Every response is a 200 only if the request came as it
			// should: HTTP/2, with Request.TLS set exactly for TLS.
			check := func(w http.ResponseWriter, r *http.Request) {
				if r.ProtoMajor != 2 || (r.TLS != nil) != tlsOn {
					http.Error(w, fmt.Sprintf("%s, TLS %v", r.Proto, r.TLS != nil), http.StatusInternalServerError)
					return
				}
				hello(w, r)
			}
			srv := &http.Server{Handler: http.HandlerFunc(check), Protocols: new(http.Protocols)}
			srv.Protocols.SetHTTP1(true)
			srv.Protocols.SetHTTP2(true)
			srv.Protocols.SetUnencryptedHTTP2(true)
			ds := drain.NewHTTPServer(srv)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			if tlsOn {
				ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{testCert()}, NextProtos: []string{"h2", "http/1.1"}})
			}
			served := make(chan error, 1)
			go func() { served <- ds.Serve(ln) }()

			const conns, depth = 4, 64
			deadline := time.Now().Add(time.Minute)
			var clients []*rawH2
			var wg sync.WaitGroup
			for range conns {
				c := dialRawH2(t, addr, tlsOn)
				clients = append(clients, c)
				wg.Go(func() { c.run(depth, 2_000_000, deadline) })
			}
			// Drain once every connection is busy.
			proctest.WaitUntil(t, "every client has 500 answers", func() bool {
				for _, c := range clients {
					if _, a := c.counts(); a < 500 {
						return false
					}
				}
				return true
			})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := ds.Drain(ctx); err != nil {
				t.Fatalf("Drain: %v", err)
			}
			wg.Wait()
			if err := <-served; err != nil {
				t.Fatalf("Serve: %v", err)
			}
			for i, c := range clients {
				c.mu.Lock()
				sent, answered, failures, goAways := c.sent, c.answered, c.failures, c.goAways
				c.mu.Unlock()
				t.Logf("connection %d: %d streams sent, %d answered, GOAWAYs %v", i, sent, answered, goAways)
				if len(failures) > 0 {
					t.Errorf("connection %d: %d of %d streams failed; first: %s", i, len(failures), sent, failures[0])
				}
				if answered != sent {
					t.Errorf("connection %d: %d streams sent, %d answered", i, sent, answered)
				}
				if len(goAways) == 0 || goAways[0] != 1<<31-1 {
					t.Errorf("connection %d: GOAWAYs %v, want the first to refuse nothing (2^31-1)", i, goAways)
				}
			}
			proctest.CheckGoroutines(t, "after the drain", goroutines)
		})
	}
}
