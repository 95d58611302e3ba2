//go:build !linux

package quic

import "os"

// keyFile returns an unlinked temporary file holding b, readable by this
// user only. (Linux uses a memory file, which no disk sees.)
func keyFile(b []byte) (*os.File, error) {
	f, err := os.CreateTemp("", "molt-quic-keys-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
