//go:build unix

package handoff

import (
	"encoding/binary"
	"fmt"
)

// SendState writes the application's state: the STATE header (version
// and size), then data in STATE frames of at most MaxPayload bytes, each
// written straight from data (no copy). The caller announces it first
// with Hello.State and sends it after the inventory. It blocks until
// every frame is written or the write deadline passes. It returns an
// error, without writing, if data is longer than MaxState or version
// longer than MaxStateVersion. Once the header is written, any failure is
// sticky: the receiver has part of the state.
func (c *Conn) SendState(version string, data []byte) error {
	if len(data) > MaxState {
		return fmt.Errorf("handoff: cannot send %d bytes of state (at most %d)", len(data), MaxState)
	}
	if len(version) > MaxStateVersion {
		return fmt.Errorf("handoff: cannot send a state version of %d bytes (at most %d)", len(version), MaxStateVersion)
	}
	if err := c.write(AppendFrame(nil, TypeState, StateHeader{Size: len(data), Version: version}.Marshal()), nil); err != nil {
		return err
	}
	var hdr [headerLen]byte
	hdr[4], hdr[5] = Version, byte(TypeState)
	for rest := data; len(rest) > 0; {
		chunk := rest[:min(len(rest), MaxPayload)]
		rest = rest[len(chunk):]
		binary.BigEndian.PutUint32(hdr[:4], uint32(2+len(chunk)))
		err := c.write(hdr[:], nil)
		if err == nil {
			err = c.write(chunk, nil)
		}
		if err != nil {
			c.werr = err
			return err
		}
	}
	return nil
}

// RecvState reads the application's state that Hello.State announced:
// the STATE header, then the data frames, straight into one buffer of the
// announced size, which it returns (the caller owns it). It blocks until
// the whole state arrived or the read deadline passes. It returns
// io.EOF if the stream ends before the header, io.ErrUnexpectedEOF if it
// ends after, a *VersionError, and an error wrapping ErrMalformed for
// another frame type, descriptors, an empty data frame, more data than
// announced, or a bad header. Every error after the header is sticky.
func (c *Conn) RecvState() (version string, data []byte, err error) {
	version, data, err = c.recvState()
	return version, data, c.sticky(err)
}

func (c *Conn) recvState() (string, []byte, error) {
	t, p, fds, err := c.next()
	if err != nil {
		return "", nil, err
	}
	closeFDs(fds)
	switch {
	case t != TypeState:
		return "", nil, malformed("expected STATE, got %v", t)
	case len(fds) > 0:
		return "", nil, malformed("STATE frame arrived with %s", descriptors(len(fds)))
	}
	h, err := UnmarshalStateHeader(p)
	if err != nil {
		return "", nil, err
	}
	data := make([]byte, h.Size)
	for off := 0; off < len(data); {
		n, err := c.readStateData(data[off:])
		if err != nil {
			return "", nil, err
		}
		off += n
	}
	return h.Version, data, nil
}

// readStateData reads one STATE data frame into the start of dst, which
// is what is still expected, and returns its length.
func (c *Conn) readStateData(dst []byte) (int, error) {
	c.idle = false // inside the state: nothing may be retried
	if c.rerr != nil {
		return 0, c.rerr
	}
	n, err := c.readFull(c.hdr[:])
	if err == nil {
		var t Type
		t, n, err = ParseHeader(c.hdr)
		switch {
		case err != nil:
		case t != TypeState:
			err = malformed("expected STATE data (%d bytes still expected), got %v", len(dst), t)
		case n == 0:
			err = malformed("empty STATE data frame")
		case n > len(dst):
			err = malformed("STATE data frame of %d bytes exceeds the %d still expected", n, len(dst))
		default:
			_, err = c.readFull(dst[:n])
		}
	}
	if fds := c.drain(); len(fds) > 0 {
		closeFDs(fds)
		if err == nil {
			err = malformed("STATE frame arrived with %s", descriptors(len(fds)))
		}
	}
	if err != nil {
		return 0, unexpectedEOF(err)
	}
	return n, nil
}
