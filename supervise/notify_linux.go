package supervise

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// notifySocket is the datagram socket the instances notify (their
// NOTIFY_SOCKET), in a directory only this user may enter. The kernel
// attaches each sender's credentials (SO_PASSCRED), so a message is
// believed only from an instance's process or its process group.
type notifySocket struct {
	c    *net.UnixConn
	dir  string
	path string
	done chan struct{}
}

const maxNotify = 4096 // as systemd's NOTIFY_BUFFER_MAX

func openNotify() (*notifySocket, error) {
	dir, err := os.MkdirTemp("", "molt-run-")
	if err != nil {
		return nil, fmt.Errorf("supervise: notify socket: %w", err)
	}
	path := filepath.Join(dir, "notify")
	if len(path) >= 108 {
		os.Remove(dir)
		return nil, fmt.Errorf("supervise: notify socket path %s is too long (set TMPDIR to a shorter directory)", path)
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("supervise: notify socket: %w", err)
	}
	rc, err := c.SyscallConn()
	if err == nil {
		var serr error
		err = rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
		if err == nil {
			err = serr
		}
	}
	if err != nil {
		c.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("supervise: notify socket: SO_PASSCRED: %w", err)
	}
	return &notifySocket{c: c, dir: dir, path: path, done: make(chan struct{})}, nil
}

// serve reads notifications until the socket is closed and passes each
// with its sender's PID to handle.
func (n *notifySocket) serve(handle func(pid int, msg []byte)) {
	defer close(n.done)
	buf := make([]byte, maxNotify)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*253))
	for {
		nb, noob, _, _, err := n.c.ReadMsgUnix(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a truncated or odd datagram: drop it
		}
		pid := -1
		if msgs, err := unix.ParseSocketControlMessage(oob[:noob]); err == nil {
			for _, m := range msgs {
				if fds, err := unix.ParseUnixRights(&m); err == nil {
					for _, fd := range fds { // FDSTORE=1 and such: not kept
						unix.Close(fd)
					}
				}
				if cred, err := unix.ParseUnixCredentials(&m); err == nil {
					pid = int(cred.Pid)
				}
			}
		}
		if pid > 0 {
			handle(pid, bytes.Clone(buf[:nb]))
		}
	}
}

func (n *notifySocket) close() {
	n.c.Close()
	<-n.done
	os.RemoveAll(n.dir)
}
