//go:build !unix

package systemd

import (
	"context"
	"syscall"
)

func (n *Notifier) send(context.Context, []byte, []int) error { return ErrNotSupported }

func (n *Notifier) barrier(context.Context) error { return ErrNotSupported }

func dupConn(syscall.Conn) (int, error) {
	return -1, ErrNotSupported
}

func closeFD(int) {}
