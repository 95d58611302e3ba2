package drain

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

// frame is one HTTP/2 frame as the tests build and parse them.
type frame struct {
	typ, flags byte
	stream     uint32
	payload    []byte
}

func (f frame) bytes() []byte {
	b := []byte{byte(len(f.payload) >> 16), byte(len(f.payload) >> 8), byte(len(f.payload)), f.typ, f.flags}
	b = binary.BigEndian.AppendUint32(b, f.stream)
	return append(b, f.payload...)
}

// parseFrames splits b into frames and fails the test if it is not a
// whole number of them.
func parseFrames(t *testing.T, b []byte) []frame {
	t.Helper()
	var out []frame
	for len(b) > 0 {
		if len(b) < frameHeaderLen {
			t.Fatalf("%d bytes left, not a frame header", len(b))
		}
		n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		if len(b) < frameHeaderLen+n {
			t.Fatalf("frame of %d bytes cut short at %d", n, len(b)-frameHeaderLen)
		}
		out = append(out, frame{b[3], b[4], binary.BigEndian.Uint32(b[5:9]) & maxStreamID, b[frameHeaderLen : frameHeaderLen+n]})
		b = b[frameHeaderLen+n:]
	}
	return out
}

// serverFrames is a server's stream with every frame the scanner must
// understand: SETTINGS first, a header block in three frames, DATA larger
// than a write, an empty frame.
func serverFrames() []frame {
	return []frame{
		{typ: 0x4, payload: make([]byte, 12)},                                          // SETTINGS
		{typ: 0x4, flags: flagAck},                                                     // SETTINGS ACK, empty
		{typ: frameHeaders, stream: 1, payload: []byte{0x88}},                          // HEADERS, END_HEADERS missing
		{typ: frameContinuation, stream: 1, payload: []byte{1, 2, 3}},                  // still in the block
		{typ: frameContinuation, flags: flagEndHeaders, stream: 1, payload: []byte{4}}, // block ends
		{typ: 0x0, flags: 0x1, stream: 1, payload: bytes.Repeat([]byte("d"), 5000)},    // DATA
		{typ: frameHeaders, flags: flagEndHeaders | 0x1, stream: 3, payload: []byte{0x88}},
	}
}

// injectable lists, for serverFrames, after which frames a frame of
// one's own may go.
var injectable = []bool{true, true, false, false, true, true, true}

func TestFrameScannerBoundaries(t *testing.T) {
	for _, chunk := range []int{1, 2, 7, 9, 10, 4096, 1 << 20} {
		var s frameScanner
		if s.atBoundary() {
			t.Fatalf("chunk %d: a boundary before the server's first frame (its SETTINGS must come first)", chunk)
		}
		for i, f := range serverFrames() {
			b := f.bytes()
			for len(b) > 0 {
				k := min(chunk, len(b))
				if n := s.scan(b[:k], false); n != k {
					t.Fatalf("chunk %d, frame %d: scan followed %d of %d bytes", chunk, i, n, k)
				}
				b = b[k:]
				if len(b) > 0 && s.atBoundary() {
					t.Fatalf("chunk %d, frame %d: a boundary inside the frame", chunk, i)
				}
			}
			if s.atBoundary() != injectable[i] {
				t.Fatalf("chunk %d: after frame %d atBoundary() = %v, want %v", chunk, i, s.atBoundary(), injectable[i])
			}
		}
	}
}

func TestFrameScannerPingAck(t *testing.T) {
	want := [pingLen]byte{1, 2, 3, 4, 5, 6, 7, 8}
	stream := append(frame{typ: framePing, payload: want[:]}.bytes(), // a PING, not an ACK
		frame{typ: framePing, flags: flagAck, payload: bytes.Repeat([]byte{9}, 8)}.bytes()...)
	stream = append(stream, frame{typ: frameGoAway, payload: make([]byte, 8)}.bytes()...)
	stream = append(stream, frame{typ: framePing, flags: flagAck, payload: want[:]}.bytes()...)
	for _, chunk := range []int{1, 3, 17, len(stream)} {
		var got [][pingLen]byte
		s := frameScanner{onPingAck: func(d [pingLen]byte) { got = append(got, d) }}
		for b := stream; len(b) > 0; {
			k := min(chunk, len(b))
			s.scan(b[:k], false)
			b = b[k:]
		}
		if len(got) != 2 || got[0] != [pingLen]byte{9, 9, 9, 9, 9, 9, 9, 9} || got[1] != want {
			t.Errorf("chunk %d: PING ACKs seen %v, want the two ACKs", chunk, got)
		}
		if !s.goAway {
			t.Errorf("chunk %d: the GOAWAY was not seen", chunk)
		}
	}
}

// recordingConn is a net.Conn whose writes are kept.
type recordingConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *recordingConn) Write(p []byte) (int, error) { return c.buf.Write(p) }

// TestInjectAtBoundary asks for the first phase at every point of the
// server's stream, written in pieces of several sizes, and checks that the
// frames come out whole, in order, with the GOAWAY and PING once, at the
// first boundary after the request.
func TestInjectAtBoundary(t *testing.T) {
	var stream []byte
	var ends []int // where each server frame ends in stream
	for _, f := range serverFrames() {
		stream = append(stream, f.bytes()...)
		ends = append(ends, len(stream))
	}
	for _, chunk := range []int{1, 5, 9, 100, 4096, len(stream)} {
		for at := 0; at < len(stream); at += max(1, chunk/2) {
			rc := &recordingConn{}
			c := newH2Conn(rc, nil)
			c.begin(DefaultGoAwayTimeout)
			for b, off := stream, 0; len(b) > 0; {
				k := min(chunk, len(b))
				if off <= at && at < off+k {
					// The request comes between two writes: before this one.
					c.startGoAway()
				}
				if _, err := c.Write(b[:k]); err != nil {
					t.Fatal(err)
				}
				b, off = b[k:], off+k
			}
			frames := parseFrames(t, rc.buf.Bytes())
			want := serverFrames()
			if len(frames) != len(want)+2 {
				t.Fatalf("chunk %d, asked at %d: %d frames out, want %d", chunk, at, len(frames), len(want)+2)
			}
			// The first phase goes after the first injectable frame ending
			// at or after the last write boundary before the request.
			written := at / chunk * chunk
			pos := 0
			for i, end := range ends {
				if end >= written && injectable[i] {
					pos = i + 1
					break
				}
			}
			if g, p := frames[pos], frames[pos+1]; g.typ != frameGoAway || p.typ != framePing ||
				binary.BigEndian.Uint32(g.payload[:4]) != maxStreamID || binary.BigEndian.Uint32(g.payload[4:]) != 0 || !bytes.Equal(p.payload, c.ping[:]) {
				t.Fatalf("chunk %d, asked at %d: frames %d and %d are %+v %+v, want GOAWAY(2^31-1, NO_ERROR) and our PING", chunk, at, pos, pos+1, g, p)
			}
			rest := append(append([]frame{}, frames[:pos]...), frames[pos+2:]...)
			for i := range want {
				if rest[i].typ != want[i].typ || rest[i].flags != want[i].flags || !bytes.Equal(rest[i].payload, want[i].payload) {
					t.Fatalf("chunk %d, asked at %d: server frame %d changed: %+v", chunk, at, i, rest[i])
				}
			}
		}
	}
}

// TestNoInjectAfterServerGoAway: once the server sent a GOAWAY of its own,
// a GOAWAY with a higher last stream id would break RFC 9113 §6.8.
func TestNoInjectAfterServerGoAway(t *testing.T) {
	rc := &recordingConn{}
	c := newH2Conn(rc, nil)
	c.begin(DefaultGoAwayTimeout)
	c.Write(frame{typ: 0x4}.bytes())
	c.Write(frame{typ: frameGoAway, payload: make([]byte, 8)}.bytes())
	c.startGoAway()
	c.Write(frame{typ: 0x4, flags: flagAck}.bytes())
	if n := len(parseFrames(t, rc.buf.Bytes())); n != 3 {
		t.Fatalf("%d frames written, want the server's 3", n)
	}
	select {
	case <-c.done:
	default:
		t.Fatal("the drain would wait for an ACK of a PING never sent")
	}
}
