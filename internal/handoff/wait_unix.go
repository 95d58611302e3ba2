//go:build unix

package handoff

import (
	"errors"
	"math"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// WaitReadable blocks until there is something to read (a frame, or the
// end of the stream), deadline passes (a zero deadline means none), or the
// Conn is closed. It returns nil when a Recv would not block, an error
// satisfying errors.Is(err, os.ErrDeadlineExceeded) past the deadline, and
// net.ErrClosed after Close. The read deadline (SetReadDeadline) does not
// apply to it.
//
// It waits in poll(2), in the calling goroutine's thread, not in Go's
// network poller. That is the point: while every P runs the service's
// goroutines, the scheduler consults the network poller only when a P runs
// out of work, and otherwise the runtime's monitor does, every 10 ms at
// most, so a frame can sit unnoticed for milliseconds; a goroutine coming
// back from a system call queues for a P at once and runs at the
// scheduler's next turn. The parent's wait for READY uses it (the
// successor, less busy when it waits for the ACK, measured faster in the
// network poller). It is one poll(2) for the
// whole wait, so that the runtime hands the goroutine's P to other work
// after its usual ~20 µs (repeated short polls would each look like a new
// system call and keep the P); Close wakes it through a pipe polled beside
// the socket.
func (c *Conn) WaitReadable(deadline time.Time) error {
	rc, err := c.uc.SyscallConn()
	if err != nil {
		return err
	}
	wake, err := c.waker()
	if err != nil {
		return err
	}
	for {
		timeout := -1 // no deadline: until readable or woken
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			timeout = int(min((left+time.Millisecond-1)/time.Millisecond, math.MaxInt32))
		}
		var (
			n             int
			perr          error
			ready, closed bool
		)
		if err := rc.Control(func(fd uintptr) {
			fds := []unix.PollFd{
				{Fd: int32(fd), Events: unix.POLLIN},
				{Fd: int32(wake), Events: unix.POLLIN},
			}
			n, perr = unix.Poll(fds, timeout)
			ready, closed = fds[0].Revents != 0, fds[1].Revents != 0
		}); err != nil {
			return err // closed before the poll
		}
		switch {
		case closed:
			return net.ErrClosed
		case errors.Is(perr, unix.EINTR):
		case perr != nil:
			return os.NewSyscallError("poll", perr)
		case n > 0 && ready: // readable, hung up or in error: a Recv reports which
			return nil
		}
	}
}

// waker returns the read end of the pipe Close writes to, made on first
// use; net.ErrClosed once the Conn is closed.
func (c *Conn) waker() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return -1, net.ErrClosed
	}
	if c.wakeR == nil {
		r, w, err := os.Pipe()
		if err != nil {
			return -1, err
		}
		c.wakeR, c.wakeW = r, w
	}
	return int(c.wakeR.Fd()), nil
}

// wakeWaiters ends a WaitReadable in progress; Close calls it before it
// closes the socket, which waits for the poll to let go of it.
func (c *Conn) wakeWaiters() {
	if c.wakeW != nil {
		c.wakeW.Write([]byte{0})
	}
}

// closeWaker closes the pipe, after the socket: no poll can use it then.
func (c *Conn) closeWaker() {
	if c.wakeR != nil {
		c.wakeR.Close()
		c.wakeW.Close()
	}
}
