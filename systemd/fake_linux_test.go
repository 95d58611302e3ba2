package systemd_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeSystemd is a notification socket as systemd has one: it receives
// datagrams with the sender's credentials (SO_PASSCRED), keeps descriptors
// sent with FDSTORE=1 and closes the others at once, as systemd closes a
// barrier's pipe.
type fakeSystemd struct {
	t    testing.TB
	addr string // for NOTIFY_SOCKET
	conn *net.UnixConn
	msgs chan notification
	done chan struct{} // closed when the reader has ended

	mu     sync.Mutex
	stored []*os.File // descriptors sent with FDSTORE=1
}

// notification is one datagram.
type notification struct {
	pid  int      // the sender, from SCM_CREDENTIALS
	vars []string // its assignments, in order
	fds  int      // descriptors attached
}

func (n notification) String() string {
	return fmt.Sprintf("pid %d: %s (%d fds)", n.pid, strings.Join(n.vars, " "), n.fds)
}

// has reports whether the notification assigns every one of vars (each
// "NAME=value", or "NAME=" for any value).
func (n notification) has(vars ...string) bool {
	for _, v := range vars {
		found := false
		for _, x := range n.vars {
			if x == v || strings.HasSuffix(v, "=") && strings.HasPrefix(x, v) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (n notification) get(name string) string {
	for _, x := range n.vars {
		if v, ok := strings.CutPrefix(x, name+"="); ok {
			return v
		}
	}
	return ""
}

// newFakeSystemd listens on a new socket: a path in a new directory, or an
// abstract name. It sets NOTIFY_SOCKET for the test.
func newFakeSystemd(t testing.TB, abstract bool) *fakeSystemd {
	t.Helper()
	var addr string
	if abstract {
		addr = fmt.Sprintf("@molt-systemd-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	} else {
		dir, err := os.MkdirTemp("", "sdn") // short: sun_path holds 107 bytes
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		addr = dir + "/notify"
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	if serr != nil {
		t.Fatal(serr)
	}
	f := &fakeSystemd{t: t, addr: addr, conn: c, msgs: make(chan notification, 1000), done: make(chan struct{})}
	go f.read()
	t.Cleanup(f.close)
	if setenv, ok := t.(interface{ Setenv(string, string) }); ok {
		setenv.Setenv("NOTIFY_SOCKET", addr)
	}
	return f
}

// read receives until the socket is closed. Started by newFakeSystemd,
// ended by close, which waits for it.
func (f *fakeSystemd) read() {
	defer close(f.done)
	buf := make([]byte, 8192)
	oob := make([]byte, 4096)
	for {
		n, oobn, flags, _, err := f.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				f.t.Errorf("fake systemd: %v", err)
			}
			return
		}
		msg := notification{vars: strings.Split(string(buf[:n]), "\n")}
		if flags&unix.MSG_CTRUNC != 0 {
			f.t.Errorf("fake systemd: control data truncated")
		}
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			f.t.Errorf("fake systemd: %v", err)
		}
		var fds []int
		for _, m := range cmsgs {
			if cred, err := unix.ParseUnixCredentials(&m); err == nil {
				msg.pid = int(cred.Pid)
			} else if rights, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, rights...)
			}
		}
		msg.fds = len(fds)
		if msg.has("FDSTORE=1") {
			f.mu.Lock()
			for _, fd := range fds {
				unix.CloseOnExec(fd)
				f.stored = append(f.stored, os.NewFile(uintptr(fd), "stored"))
			}
			f.mu.Unlock()
		} else {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
		f.msgs <- msg
	}
}

func (f *fakeSystemd) close() {
	f.conn.Close()
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.stored {
		s.Close()
	}
	f.stored = nil
}

// next returns the next notification, failing the test after a generous
// bound.
func (f *fakeSystemd) next() notification {
	f.t.Helper()
	select {
	case m := <-f.msgs:
		return m
	case <-time.After(20 * time.Second):
		f.t.Fatalf("fake systemd: no notification within 20s")
		return notification{}
	}
}

// nextMatching skips notifications until one assigns all of vars, and
// returns it with those skipped.
func (f *fakeSystemd) nextMatching(vars ...string) (notification, []notification) {
	f.t.Helper()
	var skipped []notification
	for {
		m := f.next()
		if m.has(vars...) {
			return m, skipped
		}
		skipped = append(skipped, m)
	}
}

// storedFiles returns the descriptors kept from FDSTORE=1 so far.
func (f *fakeSystemd) storedFiles() []*os.File {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*os.File(nil), f.stored...)
}
