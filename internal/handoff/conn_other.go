//go:build !unix

package handoff

import (
	"net"
	"os"
	"time"
)

// Conn is one end of a handoff conversation. On this platform descriptor
// passing is not available: every method except Close returns
// ErrNotSupported.
type Conn struct {
	uc *net.UnixConn
}

// NewConn returns a Conn that owns uc. On this platform the Conn can only
// be closed.
func NewConn(uc *net.UnixConn) *Conn { return &Conn{uc: uc} }

// SetDeadline returns ErrNotSupported.
func (c *Conn) SetDeadline(t time.Time) error { return ErrNotSupported }

// SetReadDeadline returns ErrNotSupported.
func (c *Conn) SetReadDeadline(t time.Time) error { return ErrNotSupported }

// SetWriteDeadline returns ErrNotSupported.
func (c *Conn) SetWriteDeadline(t time.Time) error { return ErrNotSupported }

// Close closes the socket given to NewConn, if any, and returns its error.
func (c *Conn) Close() error {
	if c.uc == nil {
		return nil
	}
	return c.uc.Close()
}

// SendTakeover returns ErrNotSupported.
func (c *Conn) SendTakeover() error { return ErrNotSupported }

// SendHello returns ErrNotSupported.
func (c *Conn) SendHello(h Hello) error { return ErrNotSupported }

// SendInventory returns ErrNotSupported.
func (c *Conn) SendInventory(es []Entry, fds []int) error { return ErrNotSupported }

// SendReady returns ErrNotSupported.
func (c *Conn) SendReady() error { return ErrNotSupported }

// SendFailed returns ErrNotSupported.
func (c *Conn) SendFailed(reason string) error { return ErrNotSupported }

// SendConn returns ErrNotSupported.
func (c *Conn) SendConn(e Entry, fd int) error { return ErrNotSupported }

// SendAck returns ErrNotSupported.
func (c *Conn) SendAck() error { return ErrNotSupported }

// SendProbation returns ErrNotSupported.
func (c *Conn) SendProbation() error { return ErrNotSupported }

// SendCommitted returns ErrNotSupported.
func (c *Conn) SendCommitted() error { return ErrNotSupported }

// SendStop returns ErrNotSupported.
func (c *Conn) SendStop() error { return ErrNotSupported }

// SendPredecessors returns ErrNotSupported.
func (c *Conn) SendPredecessors(ps []Process) error { return ErrNotSupported }

// RecvHello returns ErrNotSupported.
func (c *Conn) RecvHello() (Hello, error) { return Hello{}, ErrNotSupported }

// RecvInventory returns ErrNotSupported.
func (c *Conn) RecvInventory(n int) ([]Entry, []int, error) { return nil, nil, ErrNotSupported }

// RecvInventoryBatches returns ErrNotSupported.
func (c *Conn) RecvInventoryBatches(int, func([]Entry, []int)) error { return ErrNotSupported }

// RecvMessage returns ErrNotSupported.
func (c *Conn) RecvMessage() (Message, error) { return Message{}, ErrNotSupported }

// Pair returns ErrNotSupported.
func Pair() (parent *Conn, child *os.File, err error) { return nil, nil, ErrNotSupported }

// FromFD returns ErrNotSupported. It does not close fd.
func FromFD(fd, parent int) (*Conn, error) { return nil, ErrNotSupported }

// CloseRead returns ErrNotSupported.
func (c *Conn) CloseRead() error { return ErrNotSupported }

// WaitReadable returns ErrNotSupported.
func (c *Conn) WaitReadable(deadline time.Time) error { return ErrNotSupported }
