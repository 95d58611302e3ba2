package control

import "bytes"

// lineReader splits what a connection sends into request lines, in a
// buffer of MaxRequestSize bytes. Unlike bufio.Reader's ReadSlice it
// reads once per fill, so that between two reads the server knows
// whether it holds part of a request: a connection can change process
// only when it holds none, and molt.HandOver accepts only a read into an
// empty buffer at least 4096 bytes long, which MaxRequestSize is.
type lineReader struct {
	buf  [MaxRequestSize]byte
	r, w int // buf[r:w] is read and not consumed
}

// next returns the next whole line in the buffer, its newline included,
// valid until the next fill.
func (lr *lineReader) next() ([]byte, bool) {
	i := bytes.IndexByte(lr.buf[lr.r:lr.w], '\n')
	if i < 0 {
		return nil, false
	}
	line := lr.buf[lr.r : lr.r+i+1]
	lr.r += i + 1
	return line, true
}

// buffered is the number of bytes of an unfinished line in the buffer
// (after next reported none).
func (lr *lineReader) buffered() int { return lr.w - lr.r }

// full reports whether the buffer holds MaxRequestSize bytes without a
// newline: a request too large.
func (lr *lineReader) full() bool { return lr.r == 0 && lr.w == len(lr.buf) }

// rest consumes and returns the unfinished line.
func (lr *lineReader) rest() []byte {
	line := lr.buf[lr.r:lr.w]
	lr.r = lr.w
	return line
}

// fill reads once from read into the free end of the buffer, after moving
// what is left to its start.
func (lr *lineReader) fill(read func([]byte) (int, error)) error {
	if lr.r > 0 {
		lr.w = copy(lr.buf[:], lr.buf[lr.r:lr.w])
		lr.r = 0
	}
	n, err := read(lr.buf[lr.w:])
	lr.w += n
	return err
}
