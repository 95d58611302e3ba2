//go:build linux

package handoff

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// This file is what runs in the processes of a chain (the generations):
// TestMain turns the test binary into one when the environment names a
// system. The driver sets the variables for generation 1; molt and tableflip
// pass the environment on to their successors, and the exec baseline does
// the same.
const (
	envSystem     = "HANDOFF_BENCH_SYSTEM"     // molt, tableflip or exec
	envListeners  = "HANDOFF_BENCH_LISTENERS"  // N
	envGeneration = "HANDOFF_BENCH_GENERATION" // 1 for the first; each sets it for its successor
	envProfileDir = "HANDOFF_BENCH_CPUPROFILE" // where to write CPU profiles; empty: none
)

// upgradeTimeout bounds every wait of a generation, as molt's and
// tableflip's default ready timeouts (one minute) bound theirs.
const upgradeTimeout = time.Minute

// Exit statuses of a generation.
const (
	exitOK         = 0
	exitFailed     = 1
	exitDriverGone = 3
)

func TestMain(m *testing.M) {
	if system := os.Getenv(envSystem); system != "" {
		os.Exit(runGeneration(system))
	}
	os.Exit(m.Run())
}

// generation is one process of a chain, as seen by the code common to the
// three systems.
type generation interface {
	// ready tells the parent generation, if any, that this one serves.
	ready() error
	// prepare waits, before the clock starts, for what the system needs
	// before it can upgrade.
	prepare(ctx context.Context) error
	// upgrade starts the successor and returns once it is ready, noting
	// in m the moments it can see (markStarted, markReadySeen).
	upgrade(m *marks) error
	// retire returns when this generation may exit after a successful
	// upgrade.
	retire()
	// stop ends the generation without an upgrade.
	stop()
	listeners() []net.Listener
}

// systems start a generation of each system: the first one creates the
// listeners at addrs, a successor inherits them.
// They note markNew and markClaimed in m, and call m.listening with each
// listener as they make it.
var systems = map[string]func(addrs []string, m *marks) (generation, error){
	"molt":      startMolt,
	"tableflip": startTableflip,
	"exec":      startExec,
}

// systemNames is the order of the sub-benchmarks.
var systemNames = []string{"molt", "tableflip", "exec"}

// runGeneration is the life of one generation: take the listeners, become
// ready and report it, then wait for SIGHUP (upgrade, report, exit) or
// SIGTERM (stop). Reports are lines on standard output, which every
// generation shares with the driver; each is one write, shorter than
// PIPE_BUF, so lines of different processes never mix.
func runGeneration(system string) int {
	entered := now()
	pid := os.Getpid()
	fail := func(format string, args ...any) int {
		msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " ")
		fmt.Printf("fail %d %s\n", pid, msg)
		return exitFailed
	}
	start, ok := systems[system]
	if !ok {
		return fail("unknown system %q", system)
	}
	n, err := strconv.Atoi(os.Getenv(envListeners))
	if err != nil || n < 1 {
		return fail("%s=%q: want a positive number", envListeners, os.Getenv(envListeners))
	}
	gen, err := strconv.Atoi(os.Getenv(envGeneration))
	if err != nil || gen < 1 {
		return fail("%s=%q: want a positive number", envGeneration, os.Getenv(envGeneration))
	}
	profileDir := os.Getenv(envProfileDir)

	// Every generation's stdin is a pipe whose other end only the driver
	// holds: if the driver dies, the chain ends instead of serving on.
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(exitDriverGone)
	}()
	// Before anything is reported: the driver signals only a generation
	// that said it is ready.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)

	var prof *cpuProfile
	if gen > 1 {
		prof = startCPUProfile(profileDir, system, n, "successor")
	}
	m := newMarks()
	m.set(markEntered, entered)
	m.acceptFirst = gen > 1 // the driver dials before every upgrade
	g, err := start(listenAddrs(n), m)
	if err != nil {
		return fail("start generation %d: %v", gen, err)
	}
	m.note(markReadyCall)
	if err := g.ready(); err != nil {
		g.stop()
		return fail("ready: %v", err)
	}
	m.note(markReady)
	fmt.Printf("ready %d %d %d %d\n", pid, gen, m.get(markReady), entered)
	prof.stop()
	if gen > 1 {
		m.awaitAccept(upgradeTimeout)
		fmt.Println(m.line(pid))
	}
	// Described after the ready report, so that describing 10,000
	// listeners does not count as hand-off time.
	fmt.Printf("addrs %d %s\n", pid, describe(g.listeners()))
	os.Setenv(envGeneration, strconv.Itoa(gen+1)) // for the successor

	// One signal ends this generation: SIGTERM stops it, SIGHUP hands over.
	if sig := <-sigs; sig == syscall.SIGTERM {
		g.stop()
		return exitOK
	}
	ctx, cancel := context.WithTimeout(context.Background(), upgradeTimeout)
	err = g.prepare(ctx)
	cancel()
	if err != nil {
		g.stop()
		return fail("before the upgrade: %v", err)
	}
	prof = startCPUProfile(profileDir, system, n, "upgrade")
	um := newMarks()
	um.note(markStart)
	begin := um.get(markStart)
	err = g.upgrade(um)
	end := now()
	prof.stop()
	if err != nil {
		g.stop()
		return fail("upgrade: %v", err)
	}
	fmt.Printf("upgraded %d %d %d\n", pid, begin, end)
	fmt.Println(um.line(pid))
	g.retire()
	return exitOK
}

// now reads CLOCK_MONOTONIC, in nanoseconds. Unlike the wall clock it
// cannot be stepped, and on Linux all processes read the same clock, so
// times taken in two processes can be subtracted.
func now() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err) // cannot fail on Linux
	}
	return ts.Nano()
}

// listenAddrs returns n addresses, one loopback IP each (127.0.0.1,
// 127.0.0.2, …; Linux routes all of 127.0.0.0/8 to lo), port 0. They are
// distinct strings because tableflip keys listeners by the address as
// written, and port 0 lets the kernel choose, so runs never collide.
func listenAddrs(n int) []string {
	addrs := make([]string, n)
	for i := range addrs {
		var ip [4]byte
		binary.BigEndian.PutUint32(ip[:], 0x7f000001+uint32(i))
		addrs[i] = netip.AddrPortFrom(netip.AddrFrom4(ip), 0).String()
	}
	return addrs
}

// describe sums up listeners for the driver, which checks that every
// generation holds the sockets of the first: their count, a hash of their
// addresses in order, the first and the last address.
func describe(lns []net.Listener) string {
	h := fnv.New64a()
	for _, ln := range lns {
		io.WriteString(h, ln.Addr().String()+"\n")
	}
	return fmt.Sprintf("%d %016x %s %s", len(lns), h.Sum64(), lns[0].Addr(), lns[len(lns)-1].Addr())
}

// cpuProfile is a CPU profile of one phase of a generation; a nil one does
// nothing.
type cpuProfile struct{ f *os.File }

// startCPUProfile starts profiling into a new file in dir, or returns nil
// if dir is empty. A profile that cannot be written is reported on stderr
// and skipped: it must not fail the hand-off it would have observed.
func startCPUProfile(dir, system string, n int, phase string) *cpuProfile {
	if dir == "" {
		return nil
	}
	f, err := os.CreateTemp(dir, fmt.Sprintf("%s-n%d-%s-*.pprof", system, n, phase))
	if err == nil {
		err = pprof.StartCPUProfile(f)
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "handoff: no CPU profile in %s: %v\n", filepath.Clean(dir), err)
		return nil
	}
	return &cpuProfile{f}
}

func (p *cpuProfile) stop() {
	if p == nil {
		return
	}
	pprof.StopCPUProfile()
	p.f.Close()
}
