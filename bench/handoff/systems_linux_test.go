//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/moltgo/molt"
)

// moltGen is a generation under molt, written as a molt user would: the
// same Listen calls in every generation, which create the sockets in the
// first and return the inherited ones in the others.
type moltGen struct {
	upg *molt.Upgrader
	lns []net.Listener
	// cur receives the running upgrade's marks: markStarted from molt's
	// log (startedHandler), markReadySeen from a commit hook.
	cur atomic.Pointer[marks]
}

func startMolt(addrs []string, m *marks) (generation, error) {
	g := &moltGen{lns: make([]net.Listener, 0, len(addrs))}
	// molt logs "successor started" right after the exec; the benchmark
	// logs nothing else (the handler discards every record).
	logger := slog.New(startedHandler{&g.cur})
	upg, err := molt.New(molt.Options{Logger: logger})
	if err != nil {
		return nil, err
	}
	m.note(markNew)
	g.upg = upg
	for i, a := range addrs {
		ln, err := upg.Listen("tcp", a)
		if err != nil {
			upg.Stop()
			return nil, err
		}
		m.listening(i, ln)
		g.lns = append(g.lns, ln)
	}
	m.note(markClaimed)
	upg.OnCommit(func(context.Context, int) {
		if m := g.cur.Load(); m != nil {
			m.note(markReadySeen)
			m.note(markAckSent) // the hooks' last: what follows is the ACK
		}
	})
	return g, nil
}

// startedHandler is a slog.Handler that notes markStarted in the running
// upgrade's marks when molt logs that the successor started, and drops
// every record.
type startedHandler struct{ cur *atomic.Pointer[marks] }

func (h startedHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h startedHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "molt: successor started" {
		if m := h.cur.Load(); m != nil {
			m.note(markStarted)
		}
	}
	return nil
}
func (h startedHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h startedHandler) WithGroup(string) slog.Handler      { return h }

func (g *moltGen) ready() error                  { return g.upg.Ready() }
func (g *moltGen) prepare(context.Context) error { return nil }
func (g *moltGen) upgrade(m *marks) error {
	g.cur.Store(m)
	defer g.cur.Store(nil)
	return g.upg.Upgrade(context.Background())
}
func (g *moltGen) retire()                   { <-g.upg.Exit(); g.upg.Stop() }
func (g *moltGen) stop()                     { g.upg.Stop() }
func (g *moltGen) listeners() []net.Listener { return g.lns }

// tableflipGen is a generation under tableflip, written as its
// documentation shows.
type tableflipGen struct {
	upg *tableflip.Upgrader
	lns []net.Listener
}

func startTableflip(addrs []string, m *marks) (generation, error) {
	upg, err := tableflip.New(tableflip.Options{})
	if err != nil {
		return nil, err
	}
	m.note(markNew)
	g := &tableflipGen{upg: upg, lns: make([]net.Listener, 0, len(addrs))}
	for i, a := range addrs {
		ln, err := upg.Listen("tcp", a)
		if err != nil {
			upg.Stop()
			return nil, err
		}
		m.listening(i, ln)
		g.lns = append(g.lns, ln)
	}
	m.note(markClaimed)
	return g, nil
}

func (g *tableflipGen) ready() error { return g.upg.Ready() }

// prepare waits until tableflip has seen the parent exit: before that, it
// refuses to upgrade.
func (g *tableflipGen) prepare(ctx context.Context) error { return g.upg.WaitForParent(ctx) }

// How tableflip v1.2.3 refuses an upgrade (it exports no errors for these):
// before its Upgrader's loop has seen Ready, and before it has seen the
// parent exit.
const (
	errNotReady    = "process is not ready yet"
	errParentAlive = "parent hasn't exited"
)

// upgrade calls Upgrade, again if tableflip refuses for a state it is about
// to reach: Ready and WaitForParent return before the Upgrader's own loop
// has taken note (it selects on both and on the upgrade request at once,
// in random order), and the driver signals as soon as Ready returned. The
// retries count as hand-off time; they are rare and take microseconds.
func (g *tableflipGen) upgrade(*marks) error {
	deadline := time.Now().Add(upgradeTimeout)
	for {
		err := g.upg.Upgrade()
		if err == nil || (err.Error() != errNotReady && err.Error() != errParentAlive) || time.Now().After(deadline) {
			return err
		}
		runtime.Gosched() // let that loop run
	}
}

func (g *tableflipGen) retire()                   { <-g.upg.Exit() }
func (g *tableflipGen) stop()                     { g.upg.Stop(); <-g.upg.Exit() }
func (g *tableflipGen) listeners() []net.Listener { return g.lns }

// envReadyFD names, in an exec successor, the descriptor of the pipe on
// which it tells its parent that it is ready; the listeners are at 3..N+2.
const envReadyFD = "HANDOFF_BENCH_READY_FD"

// execGen is a generation of the baseline: no library, only what any
// hand-off needs, which is starting the process with the listening sockets
// and learning that it is ready.
type execGen struct {
	lns       []net.Listener
	readyPipe *os.File // a successor's end of the ready pipe; nil in generation 1
}

func startExec(addrs []string, m *marks) (generation, error) {
	fdText, inherited := os.LookupEnv(envReadyFD)
	os.Unsetenv(envReadyFD)
	g := &execGen{lns: make([]net.Listener, 0, len(addrs))}
	if !inherited {
		for _, a := range addrs {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				g.stop()
				return nil, err
			}
			g.lns = append(g.lns, ln)
		}
		return g, nil
	}
	m.note(markNew) // no library: nothing to start
	fd, err := strconv.Atoi(fdText)
	if err != nil || fd != 3+len(addrs) {
		return nil, fmt.Errorf("%s=%q, want %d", envReadyFD, fdText, 3+len(addrs))
	}
	g.readyPipe = os.NewFile(uintptr(fd), "ready")
	g.lns = g.lns[:len(addrs)]
	// Last to first, so that each duplicate lands on the descriptor its
	// successor freed (the lowest free one), above its own slot in the
	// next child: the fork then moves every listener once. In order, each
	// would land one below its slot, and the child, which must not
	// overwrite a descriptor it still needs, would first move all of them
	// above the table, needing 2N descriptors.
	for i := len(addrs) - 1; i >= 0; i-- {
		// What molt's and tableflip's successors do with each descriptor
		// they receive: net.FileListener duplicates it, the original goes.
		f := os.NewFile(uintptr(3+i), "listener")
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			g.lns = g.lns[i+1:]
			g.stop()
			return nil, fmt.Errorf("descriptor %d: %w", 3+i, err)
		}
		g.lns[i] = ln
		m.listening(i, ln)
	}
	m.note(markClaimed)
	return g, nil
}

// ready writes the ready byte; in generation 1 there is nobody to tell.
func (g *execGen) ready() error {
	if g.readyPipe == nil {
		return nil
	}
	_, err := g.readyPipe.Write([]byte{1})
	if cerr := g.readyPipe.Close(); err == nil {
		err = cerr
	}
	return err
}

func (g *execGen) prepare(context.Context) error { return nil }

// upgrade starts the successor with the listeners at descriptors 3..N+2
// and the ready pipe after them, and waits for its byte. It passes the
// listeners' own descriptors (syscall.StartProcess copies them into the
// child), so, unlike os/exec's ExtraFiles, it needs no *os.File and no
// duplicate of each.
func (g *execGen) upgrade(m *marks) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	files := make([]uintptr, 0, 3+len(g.lns)+1)
	files = append(files, 0, 1, 2)
	for _, ln := range g.lns {
		fd, err := rawFD(ln)
		if err != nil {
			w.Close()
			return err
		}
		files = append(files, fd)
	}
	env := append(os.Environ(), envReadyFD+"="+strconv.Itoa(len(files)))
	files = append(files, w.Fd())
	pid, _, err := syscall.StartProcess(os.Args[0], os.Args, &syscall.ProcAttr{
		Env:   env,
		Files: files,
		Sys:   &syscall.SysProcAttr{Setpgid: true}, // as molt starts its successors
	})
	m.note(markStarted)
	w.Close() // the child has its copy; ours would hide its exit
	if err != nil {
		return err
	}
	r.SetReadDeadline(time.Now().Add(upgradeTimeout))
	var b [1]byte
	if _, err := r.Read(b[:]); err != nil {
		// It exited (EOF) or hangs. The driver, a child subreaper, reaps it
		// once this process has exited.
		syscall.Kill(pid, syscall.SIGKILL)
		return fmt.Errorf("successor pid %d not ready: %w", pid, err)
	}
	m.note(markReadySeen)
	return nil
}

// retire has nothing to wait for: the successor serves, and this process's
// listeners close when it exits.
func (g *execGen) retire() {}

func (g *execGen) stop() {
	for _, ln := range g.lns {
		ln.Close()
	}
}

func (g *execGen) listeners() []net.Listener { return g.lns }

// rawFD returns ln's descriptor without (*os.File).Fd, which would put the
// socket, shared with the successor, in blocking mode. It stays valid while
// ln is open.
func rawFD(ln net.Listener) (uintptr, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return 0, errors.New("listener has no descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var fd uintptr
	if err := rc.Control(func(f uintptr) { fd = f }); err != nil {
		return 0, err
	}
	return fd, nil
}
