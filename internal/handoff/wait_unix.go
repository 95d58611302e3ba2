//go:build unix

package handoff

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// pollSlice bounds one poll(2) of WaitReadable: a Close that comes during
// the wait waits at most this long for it to let go of the socket.
const pollSlice = 10 * time.Millisecond

// WaitReadable blocks until there is something to read (a frame, or the
// end of the stream), deadline passes (a zero deadline means none), or the
// Conn is closed. It returns nil when a Recv would not block, an error
// satisfying errors.Is(err, os.ErrDeadlineExceeded) past the deadline, and
// net.ErrClosed after Close.
//
// It waits in poll(2), in the calling goroutine's thread, not in Go's
// network poller. That is the point: while every P runs the service's
// goroutines, the scheduler consults the network poller only when a P runs
// out of work, and otherwise the runtime's monitor does, every 10 ms at
// most, so a frame can sit unnoticed for milliseconds; a goroutine coming
// back from a system call queues for a P at once and runs at the
// scheduler's next turn. The hand-off's latency-critical waits (READY in
// the parent, the ACK in the successor) use it. It holds one thread while
// it waits, and a Close during the wait takes up to pollSlice to finish.
func (c *Conn) WaitReadable(deadline time.Time) error {
	rc, err := c.uc.SyscallConn()
	if err != nil {
		return err
	}
	for {
		slice := pollSlice
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			slice = min(slice, left)
		}
		var n int
		var perr error
		if err := rc.Control(func(fd uintptr) {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, perr = unix.Poll(fds, int((slice+time.Millisecond-1)/time.Millisecond))
		}); err != nil {
			return err // closed
		}
		switch {
		case errors.Is(perr, unix.EINTR):
		case perr != nil:
			return os.NewSyscallError("poll", perr)
		case n > 0: // readable, hung up or in error: a Recv reports which
			return nil
		}
	}
}
