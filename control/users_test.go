//go:build linux

package control_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/internal/proctest"
)

// Processes of other users: an attacker that swaps the socket file for a
// symbolic link, and clients that flood the socket. They run a copy of
// this test binary that the other user can execute, until the test closes
// their standard input (and for roleLimit at most).

const (
	envTarget  = "MOLT_CONTROL_TEST_TARGET"  // swapper: the file the link points to
	envWorkers = "MOLT_CONTROL_TEST_WORKERS" // flood: connections at once
)

// roleLimit bounds every loop of the roles below, should the test not end
// them.
const roleLimit = 3 * time.Minute

func init() {
	roles["swapper"] = roleSwapper
	roles["flood"] = roleFlood
}

// requireRoot skips a test that must start processes as other users.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: it runs processes as other users (syscall.Credential)")
	}
}

// userProc is a role process running as another user.
type userProc struct {
	ev    *proctest.Events
	stdin *os.File
	done  chan struct{} // closed when it has exited
	cmd   *exec.Cmd
}

// startAsUser starts role as uid and gid. The test binary is copied to a
// directory that user may read, since the build directory is private.
func startAsUser(t *testing.T, uid, gid int, role string, env ...string) *userProc {
	t.Helper()
	dir := proctest.ShortDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "control.test")
	copyExecutable(t, os.Args[0], exe)
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), envRole+"="+role)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	p := &userProc{ev: proctest.NewEvents(outR), stdin: inW, done: make(chan struct{}), cmd: cmd}
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		inW.Close()
		cmd.Process.Kill()
		<-p.done
		outR.Close()
	})
	return p
}

// stop closes the role's standard input and returns its last event, name.
func (p *userProc) stop(t *testing.T, name string) map[string]string {
	t.Helper()
	p.stdin.Close()
	return p.ev.Wait(t, name)
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// untilStdinCloses returns a channel closed when standard input ends or
// roleLimit has passed.
func untilStdinCloses() <-chan struct{} {
	stop := make(chan struct{})
	var once sync.Once
	end := func() { once.Do(func() { close(stop) }) }
	go func() { io.Copy(io.Discard, os.Stdin); end() }()
	time.AfterFunc(roleLimit, end)
	return stop
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// roleSwapper swaps the name of the control socket (envSock) with a
// symbolic link to envTarget, over and over, as an attacker who may write
// to the socket's directory would: a server that checks the name and then
// changes the file by name may change the link's target instead.
func roleSwapper() int {
	sock, target := os.Getenv(envSock), os.Getenv(envTarget)
	link := filepath.Join(filepath.Dir(sock), "swap-"+strconv.Itoa(os.Getpid()))
	if err := os.Symlink(target, link); err != nil {
		proctest.Say("error err=%q", err.Error())
		return 10
	}
	defer os.Remove(link)
	stop := untilStdinCloses()
	proctest.Say("swapping pid=%d uid=%d", os.Getpid(), os.Getuid())
	var swaps, refused int
	var lastErr error
	for !stopped(stop) {
		// Twice, so that the socket is back under its name after each
		// pair; in between, the name is the link.
		for range 2 {
			if err := unix.Renameat2(unix.AT_FDCWD, link, unix.AT_FDCWD, sock, unix.RENAME_EXCHANGE); err != nil {
				refused++
				lastErr = err
				continue
			}
			swaps++
		}
	}
	proctest.Say("swapped swaps=%d refused=%d err=%q", swaps, refused, errText(lastErr))
	return 0
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// roleFlood keeps envWorkers connections to the control socket open,
// connecting again as soon as one ends: a connection that gets no reply
// is held until the server closes it (idle), one that is refused is
// replaced at once. It reports "saturated" at its first refusal (the
// server serves it no more connections), and counts the replies by code.
func roleFlood() int {
	sock := os.Getenv(envSock)
	workers, _ := strconv.Atoi(os.Getenv(envWorkers))
	stop := untilStdinCloses()
	var (
		mu        sync.Mutex
		codes     = map[control.Code]int{}
		dialErrs  atomic.Int64
		saturated sync.Once
		wg        sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for !stopped(stop) {
				c, err := net.Dial("unix", sock)
				if err != nil {
					dialErrs.Add(1)
					continue
				}
				ended := make(chan struct{})
				go func() { // a held connection ends when the test stops the flood
					select {
					case <-stop:
					case <-ended:
					}
					c.Close()
				}()
				c.SetReadDeadline(time.Now().Add(roleLimit))
				line, err := bufio.NewReader(c).ReadBytes('\n')
				close(ended)
				var rep control.Reply
				if err != nil || json.Unmarshal(line, &rep) != nil {
					continue // the server closed a held connection, or the flood ended
				}
				mu.Lock()
				codes[rep.Code]++
				mu.Unlock()
				saturated.Do(func() { proctest.Say("saturated pid=%d code=%s", os.Getpid(), rep.Code) })
			}
		})
	}
	wg.Wait()
	proctest.Say("flooded pid=%d busy=%d denied=%d other=%d dial_errors=%d", os.Getpid(),
		codes[control.CodeBusy], codes[control.CodePermissionDenied],
		sumExcept(codes, control.CodeBusy, control.CodePermissionDenied), dialErrs.Load())
	return 0
}

func sumExcept(m map[control.Code]int, except ...control.Code) int {
	n := 0
outer:
	for k, v := range m {
		for _, e := range except {
			if k == e {
				continue outer
			}
		}
		n += v
	}
	return n
}
