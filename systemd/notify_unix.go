//go:build unix

package systemd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// send writes msg, with fds attached (SCM_RIGHTS), as one datagram to
// systemd's socket. It uses a socket of its own for each datagram, as
// sd_notify does, so a Notifier holds no descriptor. The kernel attaches
// this process's credentials, by which systemd knows the sender.
func (n *Notifier) send(ctx context.Context, msg []byte, fds []int) error {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("systemd: notify %s: %w", n.addr, err)
	}
	defer c.Close()
	// ctx's end interrupts a write that waits for room on systemd's queue
	// (and so the error is seen after ctx.Err is set).
	defer context.AfterFunc(ctx, func() { c.SetWriteDeadline(time.Unix(1, 0)) })()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	// net refuses WriteMsgUnix on a connected datagram socket; sendmsg
	// through the raw connection waits for room, and the deadline, with
	// the runtime's poller.
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("systemd: notify %s: %w", n.addr, err)
	}
	nw := 0
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		nw, serr = unix.SendmsgN(int(fd), msg, oob, nil, unix.MSG_NOSIGNAL)
		return serr != unix.EAGAIN && serr != unix.EINTR
	})
	if err == nil && serr != nil {
		err = os.NewSyscallError("sendmsg", serr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("systemd: notify %s: %w", n.addr, err)
	}
	if nw != len(msg) {
		return fmt.Errorf("systemd: notify %s: short write (%d of %d bytes)", n.addr, nw, len(msg))
	}
	return nil
}

// barrier implements Notifier.Barrier: systemd closes the write end of the
// pipe once it has processed BARRIER=1, and with it every notification
// queued before; the read end then reads end-of-file.
func (n *Notifier) barrier(ctx context.Context) error {
	r, w, err := os.Pipe() // close-on-exec; r is non-blocking, so reads honour deadlines
	if err != nil {
		return fmt.Errorf("systemd: barrier: %w", err)
	}
	defer r.Close()
	fd, err := dupConn(w)
	w.Close() // systemd must hold the only copy of the write end
	if err != nil {
		return fmt.Errorf("systemd: barrier: %w", err)
	}
	err = n.send(ctx, []byte("BARRIER=1"), []int{fd})
	closeFD(fd)
	if err != nil {
		return err
	}
	defer context.AfterFunc(ctx, func() { r.SetReadDeadline(time.Unix(1, 0)) })()
	var buf [16]byte
	for {
		_, err := r.Read(buf[:])
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil && ctx.Err() != nil:
			return context.Cause(ctx)
		case err != nil:
			return fmt.Errorf("systemd: barrier: %w", err)
		}
		// systemd never writes to the pipe; ignore whatever did.
	}
}

// dupConn duplicates c's descriptor (close-on-exec) through SyscallConn,
// never through (*os.File).Fd, which would switch a socket to blocking mode
// in every process sharing it. The caller closes the result.
func dupConn(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", derr)
	}
	return nfd, nil
}

func closeFD(fd int) { unix.Close(fd) }
