//go:build !unix

package main

import (
	"errors"
	"syscall"
)

func setReusePort(string, string, syscall.RawConn) error {
	return errors.New("SO_REUSEPORT is not supported on this platform")
}
