//go:build linux

package molt_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moltgo/molt"
)

// The roles of TestNewRefusesForeignDescriptor report on descriptor 3 (a
// pipe), since the descriptor under test may be their standard output.
const reportFD = 3

// roleForeignFD calls New with MOLT_HANDOFF_FD naming a descriptor that is
// not its parent's hand-off channel, reports New's error on reportFD, and
// then proves the descriptor was left alone: it is still open, and the
// first bytes its peer reads are the ones written now.
func roleForeignFD() int {
	report := os.NewFile(reportFD, "report")
	fd, _ := strconv.Atoi(os.Getenv("MOLT_HANDOFF_FD"))
	u, err := molt.New(molt.Options{ReadyTimeout: 3 * time.Second})
	if err == nil {
		u.Stop()
		fmt.Fprintln(report, "new err=<nil>")
		return 1
	}
	fmt.Fprintf(report, "new err=%q\n", err.Error())
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		fmt.Fprintf(report, "closed fd=%d err=%q\n", fd, err.Error())
		return 1
	}
	if _, err := unix.Write(fd, []byte("alive\n")); err != nil {
		fmt.Fprintf(report, "write fd=%d err=%q\n", fd, err.Error())
		return 1
	}
	fmt.Fprintf(report, "untouched fd=%d\n", fd)
	return 0
}

// roleLaunch starts the test binary as envLaunchRole with its own
// descriptors 3 and 4, and waits for it: the process it starts has this
// one, not the test, as its parent.
func roleLaunch() int {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envRole+"="+os.Getenv(envLaunchRole))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{os.NewFile(3, "report"), os.NewFile(4, "fd4")}
	if err := cmd.Run(); err != nil {
		return 1
	}
	return 0
}

const envLaunchRole = "MOLT_TEST_LAUNCH_ROLE"

// TestNewRefusesForeignDescriptor: MOLT_HANDOFF_FD naming standard input,
// output or error, a socket connected to a listening path (as stdout is
// under journald), or a socketpair made by a process other than the
// parent is refused at once by New with an error naming the variable, and
// nothing is read from, written into or closed on that descriptor.
func TestNewRefusesForeignDescriptor(t *testing.T) {
	tests := []struct {
		name   string
		fd     int
		launch bool   // start the role through another process, which becomes its parent
		peer   string // "pair": a socketpair made by the test; "path": connected to a listener of the test
		want   string
	}{
		{"stdin", 0, false, "pair", "fd 0 is standard input"},
		{"stdout", 1, false, "pair", "fd 1 is standard output"},
		{"stderr", 2, false, "pair", "fd 2 is standard error"},
		{"socket connected to a path", 4, false, "path", "is connected to"},
		{"pair made by another process", 4, true, "pair", fmt.Sprintf("belongs to process %d, not to the parent", os.Getpid())},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ours, theirs := foreignSocket(t, tc.peer)
			rr, rw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer rr.Close()
			cmd := exec.Command(os.Args[0])
			role := "foreign-fd"
			if tc.launch {
				role = "launch"
			}
			cmd.Env = append(os.Environ(), envRole+"="+role, envLaunchRole+"=foreign-fd",
				"MOLT_HANDOFF_FD="+strconv.Itoa(tc.fd))
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			cmd.ExtraFiles = []*os.File{rw, theirs}
			switch tc.fd {
			case 0:
				cmd.Stdin = theirs
			case 1:
				cmd.Stdout = theirs
			case 2:
				cmd.Stderr = theirs
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			rw.Close()
			theirs.Close()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			defer func() {
				cmd.Process.Kill()
				<-done
			}()

			report := bufio.NewScanner(rr)
			var lines []string
			for report.Scan() {
				lines = append(lines, report.Text())
			}
			if len(lines) < 1 || !strings.Contains(lines[0], "MOLT_HANDOFF_FD="+strconv.Itoa(tc.fd)) || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("New reported %q; want an error naming MOLT_HANDOFF_FD=%d and saying %q", lines, tc.fd, tc.want)
			}
			if len(lines) != 2 || lines[1] != fmt.Sprintf("untouched fd=%d", tc.fd) {
				t.Fatalf("after New: %q; want the descriptor still open and writable", lines[1:])
			}
			ours.SetReadDeadline(time.Now().Add(time.Minute))
			got, err := io.ReadAll(ours)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "alive\n" {
				t.Errorf("the descriptor's peer read %q, want only what the role wrote after New (\"alive\\n\")", got)
			}
			if err := <-done; err != nil {
				t.Errorf("role exited with %v", err)
			}
			done <- nil
		})
	}
}

// foreignSocket returns a connected Unix stream socket: ours, read by the
// test, and theirs, for the role. With "path" theirs is a client of a
// listener on a file path, as journald's stdout stream is.
func foreignSocket(t *testing.T, kind string) (ours net.Conn, theirs *os.File) {
	t.Helper()
	var ourFD, theirFD int
	switch kind {
	case "pair":
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		ourFD, theirFD = fds[0], fds[1]
	case "path":
		path := filepath.Join(t.TempDir(), "stdout")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := c.(*net.UnixConn).File()
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		accepted, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { accepted.Close() })
		return accepted, f
	}
	f := os.NewFile(uintptr(ourFD), "ours")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, os.NewFile(uintptr(theirFD), "theirs")
}

func init() {
	roles["foreign-fd"] = roleForeignFD
	roles["launch"] = roleLaunch
}
