package quic

import (
	"os"

	"golang.org/x/sys/unix"
)

// keyFile returns an anonymous memory file holding b.
func keyFile(b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("molt-quic-keys", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create", err)
	}
	f := os.NewFile(uintptr(fd), "molt-quic-keys")
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
