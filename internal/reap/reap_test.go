//go:build unix

package reap_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moltgo/molt/internal/reap"
	"golang.org/x/sys/unix"
)

// envRole names the part a re-executed test binary plays.
const envRole = "REAP_TEST_ROLE"

// testTimeout bounds every wait of a test.
const testTimeout = 30 * time.Second

func TestMain(m *testing.M) {
	switch role := os.Getenv(envRole); role {
	case "":
		os.Exit(m.Run())
	case "exit3":
		os.Exit(3)
	case "block": // until standard input ends
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	case "orphan": // start a "block" child on the same standard input, print its PID, exit
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envRole+"=block")
		cmd.Stdin = os.Stdin
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(cmd.Process.Pid)
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
		os.Exit(2)
	}
}

// child describes a process a test started.
type child struct {
	pid   int
	stdin *os.File // the write end of its standard input; nil if none
	out   *bufio.Reader
	outF  *os.File
}

// start starts the test binary in role through the Reaper, with a pipe as
// standard input and another as standard output. The test ends with
// nothing left: whatever is still alive then is killed and is an error.
func start(t *testing.T, r *reap.Reaper, role string) *child {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// Without a race detector's one-second sleep at exit.
	cmd.Env = append(os.Environ(), envRole+"="+role, "GORACE=atexit_sleep_ms=0")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, os.Stderr
	err = r.Start(cmd)
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		t.Fatal(err)
	}
	c := &child{pid: cmd.Process.Pid, stdin: inW, out: bufio.NewReader(outR), outF: outR}
	t.Cleanup(func() {
		c.stdin.Close()
		c.outF.Close()
	})
	return c
}

// line reads one line of c's output, within testTimeout.
func (c *child) line(t *testing.T) string {
	t.Helper()
	c.outF.SetReadDeadline(time.Now().Add(testTimeout))
	s, err := c.out.ReadString('\n')
	if err != nil {
		t.Fatalf("pid %d: reading its output: %v", c.pid, err)
	}
	return strings.TrimSpace(s)
}

// reaper returns the Reaper, and checks at the end of the test that it
// left nothing behind.
func reaper(t *testing.T) *reap.Reaper {
	t.Helper()
	r, err := reap.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if !r.WaitAllGone(ctx) {
			t.Errorf("processes left at the end of the test, killed: %v", r.KillLeft(testTimeout))
		}
	})
	return r
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func TestNewReturnsTheOneReaper(t *testing.T) {
	a, err := reap.New()
	if err != nil {
		t.Fatal(err)
	}
	b, err := reap.New()
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("two calls of New returned two Reapers")
	}
}

func TestExitStatus(t *testing.T) {
	r := reaper(t)
	ctx := testContext(t)
	c := start(t, r, "exit3")
	st, err := r.WaitPID(ctx, c.pid)
	if err != nil || st != "exit status 3" {
		t.Fatalf("WaitPID = %q, %v; want exit status 3", st, err)
	}
	if st, ok := r.Status(c.pid); !ok || st != "exit status 3" {
		t.Errorf("Status = %q, %v; want exit status 3, true", st, ok)
	}
	if err := r.Signal(c.pid, syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal to a reaped process = %v, want os.ErrProcessDone", err)
	}
	if !r.WaitAllGone(ctx) {
		t.Error("WaitAllGone: not all gone")
	}
}

func TestSignal(t *testing.T) {
	r := reaper(t)
	ctx := testContext(t)
	c := start(t, r, "block")
	if _, ok := r.Status(c.pid); ok {
		t.Fatal("Status reports a process that is blocked on its input as ended")
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if r.WaitAllGone(done) {
		t.Error("WaitAllGone reports all gone while a child runs")
	}
	if err := r.Signal(c.pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, err := r.WaitPID(ctx, c.pid)
	if err != nil || st != "killed by SIGTERM" {
		t.Errorf("WaitPID = %q, %v; want killed by SIGTERM", st, err)
	}
}

func TestOwnProcessGroup(t *testing.T) {
	r := reaper(t)
	ctx := testContext(t)
	c := start(t, r, "block")
	pgid, err := unix.Getpgid(c.pid)
	if err != nil {
		t.Fatal(err)
	}
	if pgid != c.pid {
		t.Errorf("child pid %d is in process group %d, want its own", c.pid, pgid)
	}
	c.stdin.Close()
	if st, err := r.WaitPID(ctx, c.pid); err != nil || st != "exit status 0" {
		t.Errorf("WaitPID = %q, %v; want exit status 0", st, err)
	}
}

// An orphaned grandchild is re-parented to the driver, which reaps it and
// knows that it was the last process.
func TestOrphanIsReaped(t *testing.T) {
	if !reap.SeesEveryProcess {
		t.Skip("the Reaper sees only its own children here")
	}
	r := reaper(t)
	ctx := testContext(t)
	c := start(t, r, "orphan")
	grandchild, err := strconv.Atoi(c.line(t))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := r.WaitPID(ctx, c.pid); err != nil || st != "exit status 0" {
		t.Fatalf("the child: WaitPID = %q, %v; want exit status 0", st, err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if r.WaitAllGone(done) {
		t.Fatal("WaitAllGone reports all gone while the grandchild runs")
	}
	c.stdin.Close() // the grandchild's input too
	if st, err := r.WaitPID(ctx, grandchild); err != nil || st != "exit status 0" {
		t.Fatalf("the grandchild: WaitPID = %q, %v; want exit status 0", st, err)
	}
	if !r.WaitAllGone(ctx) {
		t.Error("WaitAllGone: not all gone")
	}
}

func TestKillLeft(t *testing.T) {
	r := reaper(t)
	ctx := testContext(t)
	want := []int{start(t, r, "block").pid}
	if reap.SeesEveryProcess {
		c := start(t, r, "orphan")
		grandchild, err := strconv.Atoi(c.line(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.WaitPID(ctx, c.pid); err != nil {
			t.Fatal(err)
		}
		want = append(want, grandchild)
	}
	slices.Sort(want)

	left := r.KillLeft(testTimeout)
	var got []int
	for _, p := range left {
		got = append(got, p.PID)
		if !strings.Contains(p.Command, filepath.Base(os.Args[0])) {
			t.Errorf("%v: the command does not name the test binary %s", p, os.Args[0])
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("KillLeft killed %v, want %v", left, want)
	}
	for _, pid := range want {
		if st, err := r.WaitPID(ctx, pid); err != nil || st != "killed by SIGKILL" {
			t.Errorf("pid %d: WaitPID = %q, %v; want killed by SIGKILL", pid, st, err)
		}
	}
	if !r.WaitAllGone(ctx) {
		t.Error("WaitAllGone: not all gone")
	}
	if left := r.KillLeft(testTimeout); len(left) != 0 {
		t.Errorf("a second KillLeft killed %v", left)
	}
}

func TestStartRefuses(t *testing.T) {
	r := reaper(t)
	notExec := filepath.Join(t.TempDir(), "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cmd  func() *exec.Cmd
	}{
		{"a buffer as standard output", func() *exec.Cmd {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Stdout = new(bytes.Buffer)
			return cmd
		}},
		{"exec.CommandContext", func() *exec.Cmd {
			return exec.CommandContext(context.Background(), os.Args[0], "-test.run=^$")
		}},
		{"a file that is not executable", func() *exec.Cmd { return exec.Command(notExec) }},
	} {
		cmd := tc.cmd()
		if err := r.Start(cmd); err == nil {
			t.Errorf("%s: Start succeeded", tc.name)
		}
		if cmd.Process != nil {
			t.Errorf("%s: a process was started", tc.name)
		}
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if !r.WaitAllGone(done) {
		t.Error("a refused Start left the Reaper waiting for a process")
	}
}
