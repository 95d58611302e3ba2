package supervise

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// instance is one process of the program.
type instance struct {
	gen     uint64
	pid     int // set by reaper.start
	started time.Time
	probe   string // the private probe socket's address, if any

	ready     chan struct{}
	readyOnce sync.Once
	exited    chan struct{} // closed once reaped; ws is set then
	ws        unix.WaitStatus

	mu       sync.Mutex
	status   string // the last STATUS= it sent
	stopping bool   // it said STOPPING=1, or was told to stop
}

func (in *instance) markReady() { in.readyOnce.Do(func() { close(in.ready) }) }

// reaped is called by the reaper, with its lock held.
func (in *instance) reaped(ws unix.WaitStatus) {
	in.ws = ws
	close(in.exited)
}

// exitStatus says how it ended, as os.ProcessState does.
func exitStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		s := "signal: " + ws.Signal().String()
		if ws.CoreDump() {
			s += " (core dumped)"
		}
		return s
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// exitCode is the status a shell would report: the exit status, or 128
// plus the signal.
func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// removedEnv are the variables an instance must not inherit from the
// supervisor: they are the supervisor's own.
var removedEnv = []string{"LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES=", "NOTIFY_SOCKET=",
	"WATCHDOG_PID=", "WATCHDOG_USEC=", envShim + "="}

// shimPath is the executable started as the shim: this process's own
// executable, through /proc so that a binary replaced on disk meanwhile
// is still this one.
const shimPath = "/proc/self/exe"

// startInstance starts generation gen of the program.
func (s *Supervisor) startInstance(gen uint64) (*instance, error) {
	path, err := exec.LookPath(s.opts.Program)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStart, err)
	}
	inst := &instance{gen: gen, ready: make(chan struct{}), exited: make(chan struct{})}

	files := []uintptr{s.opts.Stdin.Fd(), s.opts.Stdout.Fd(), s.opts.Stderr.Fd()}
	names := make([]string, 0, len(s.socks)+1)
	for _, sk := range s.socks {
		files = append(files, uintptr(sk.fd))
		names = append(names, sk.name)
	}
	var probeFile *os.File
	if s.opts.Ready.Private() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("%w: the private probe socket: %v", ErrStart, err)
		}
		inst.probe = ln.Addr().String()
		probeFile, err = ln.(*net.TCPListener).File()
		ln.Close()
		if err != nil {
			return nil, fmt.Errorf("%w: the private probe socket: %v", ErrStart, err)
		}
		defer probeFile.Close() // the instance has its own copy
		fd, err := rawFD(probeFile)
		if err != nil {
			return nil, fmt.Errorf("%w: the private probe socket: %v", ErrStart, err)
		}
		unix.SetNonblock(fd, false)
		files = append(files, uintptr(fd))
		names = append(names, ProbeFDName)
	}

	env := s.opts.Env
	if env == nil {
		env = os.Environ()
	}
	env = filterEnv(env)
	env = append(env,
		envShim+"=1",
		"LISTEN_FDS="+strconv.Itoa(len(names)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"),
		"NOTIFY_SOCKET="+s.notify.path,
	)
	argv := append([]string{"molt-run-exec", path, s.opts.Program}, s.opts.Args...)
	attr := &syscall.ProcAttr{
		Dir:   s.opts.Dir,
		Env:   env,
		Files: files,
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	err = theReaper().start(inst, func() (int, error) {
		pid, err := syscall.ForkExec(shimPath, argv, attr)
		inst.started = time.Now()
		return pid, err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrStart, path, err)
	}
	return inst, nil
}

func filterEnv(env []string) []string {
	out := make([]string, 0, len(env)+4)
next:
	for _, kv := range env {
		for _, p := range removedEnv {
			if strings.HasPrefix(kv, p) {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// rawFD returns f's descriptor without Fd, which would make it blocking
// (harmless here, but a habit this repository keeps).
func rawFD(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return -1, err
	}
	return fd, nil
}
