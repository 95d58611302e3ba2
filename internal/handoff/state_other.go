//go:build !unix

package handoff

// SendState returns ErrNotSupported.
func (c *Conn) SendState(version string, data []byte) error { return ErrNotSupported }

// RecvState returns ErrNotSupported.
func (c *Conn) RecvState() (string, []byte, error) { return "", nil, ErrNotSupported }
