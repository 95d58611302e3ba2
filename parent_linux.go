package molt

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moltgo/molt/internal/handoff"
)

// ackTaken waits until the successor has read everything sent on its
// channel (the ACK), and fails if it closed its end with that unread. A
// write to a process that is dying (killed right after READY) succeeds
// until its last thread has exited and its descriptors are closed, so the
// write alone does not tell. Closing a stream socket with data unread
// marks the peer's end ECONNRESET before the data is freed, and SIOCOUTQ
// (bytes written here and not yet freed by the peer) drops to 0 either
// way. If the checks are not possible it reports nil, as the write did.
func ackTaken(c *handoff.Conn, timeout time.Duration) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for pause := 20 * time.Microsecond; ; pause = min(2*pause, 5*time.Millisecond) {
		unread, soErr, opErr := 0, 0, error(nil)
		if rc.Control(func(fd uintptr) {
			if unread, opErr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); opErr == nil && unread == 0 {
				soErr, opErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
			}
		}) != nil || opErr != nil {
			return nil
		}
		switch {
		case unread == 0 && soErr != 0:
			return os.NewSyscallError("closed with the ACK unread", syscall.Errno(soErr))
		case unread == 0:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("ACK not read within %v: %w", timeout, os.ErrDeadlineExceeded)
		}
		time.Sleep(pause)
	}
}
