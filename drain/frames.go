package drain

import "encoding/binary"

// HTTP/2 framing (RFC 9113 §4.1 and §6), as far as the two-phase GOAWAY
// needs it: where frames begin and end in a byte stream, which frames
// open a header block, and the two frames molt writes itself.
const (
	frameHeaderLen = 9

	frameHeaders      = 0x1
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameContinuation = 0x9

	flagAck        = 0x1 // PING
	flagEndHeaders = 0x4 // HEADERS, PUSH_PROMISE, CONTINUATION

	pingLen = 8

	// maxStreamID is the largest stream identifier (2^31-1): a GOAWAY
	// carrying it refuses no stream.
	maxStreamID = 1<<31 - 1
)

// clientPreface is what an HTTP/2 client sends before its first frame.
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// frameScanner follows one direction of an HTTP/2 connection, fed the
// bytes in pieces of any size, and knows at every byte whether a frame
// of its own could be put there: between two frames, and not inside a
// header block (a HEADERS or PUSH_PROMISE frame and its CONTINUATION
// frames must be contiguous, §6.10).
type frameScanner struct {
	hdr       [frameHeaderLen]byte // the current frame's header, as far as seen
	nhdr      int                  // bytes of hdr seen
	left      int                  // payload bytes of the current frame still to come
	inBlock   bool                 // inside a header block
	frames    int                  // frames seen complete
	goAway    bool                 // a GOAWAY frame was seen
	ping      [pingLen]byte        // payload of the current PING ACK, as far as seen
	npay      int                  // payload bytes seen of the current frame
	onPingAck func(data [pingLen]byte)
}

// atBoundary reports whether the scanner stands between two frames,
// outside a header block, after at least one frame: where a frame of
// one's own may go without splitting or reordering anyone else's. The
// first frame is required because a server's first frame must be its
// SETTINGS (§3.4).
func (s *frameScanner) atBoundary() bool {
	return s.nhdr == 0 && s.left == 0 && !s.inBlock && s.frames > 0
}

// scan follows p. If stopAtBoundary, it stops at the first place in p
// (its start included) where atBoundary holds. It returns how many bytes
// of p it followed.
func (s *frameScanner) scan(p []byte, stopAtBoundary bool) int {
	n := 0
	for n < len(p) {
		if stopAtBoundary && s.atBoundary() {
			return n
		}
		switch {
		case s.nhdr < frameHeaderLen:
			k := copy(s.hdr[s.nhdr:], p[n:])
			s.nhdr += k
			n += k
			if s.nhdr == frameHeaderLen {
				s.begin()
			}
		default:
			k := min(s.left, len(p)-n)
			if s.capturing() {
				copy(s.ping[s.npay:], p[n:n+k])
			}
			s.npay += k
			s.left -= k
			n += k
			if s.left == 0 {
				s.end()
			}
		}
	}
	return n
}

// begin is called when the current frame's header is complete.
func (s *frameScanner) begin() {
	s.left = int(s.hdr[0])<<16 | int(s.hdr[1])<<8 | int(s.hdr[2])
	s.npay = 0
	switch s.hdr[3] {
	case frameHeaders, framePushPromise, frameContinuation:
		s.inBlock = s.hdr[4]&flagEndHeaders == 0
	case frameGoAway:
		s.goAway = true
	}
	if s.left == 0 {
		s.end()
	}
}

// capturing reports whether the current frame is a PING ACK whose payload
// is kept.
func (s *frameScanner) capturing() bool {
	return s.onPingAck != nil && s.hdr[3] == framePing && s.hdr[4]&flagAck != 0 && s.left+s.npay == pingLen
}

// end is called when the current frame is complete.
func (s *frameScanner) end() {
	if s.capturing() && s.npay == pingLen {
		s.onPingAck(s.ping)
	}
	s.nhdr = 0
	s.frames++
}

// appendFrame appends an HTTP/2 frame on stream 0 to b.
func appendFrame(b []byte, typ, flags byte, payload []byte) []byte {
	b = append(b, byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload)), typ, flags, 0, 0, 0, 0)
	return append(b, payload...)
}

// firstGoAway returns the first phase of a graceful shutdown (RFC 9113
// §6.8): a GOAWAY that refuses no stream (last stream id 2^31-1,
// NO_ERROR), which tells the client to open no more streams, then a PING
// with data, whose ACK proves that every stream the client opened before
// it read the GOAWAY has reached the server.
func firstGoAway(data [pingLen]byte) []byte {
	var goAway [8]byte
	binary.BigEndian.PutUint32(goAway[0:4], maxStreamID)
	// goAway[4:8] is the error code: NO_ERROR (0).
	b := appendFrame(make([]byte, 0, 2*frameHeaderLen+8+pingLen), frameGoAway, 0, goAway[:])
	return appendFrame(b, framePing, 0, data[:])
}
