package molt

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moltgo/molt/internal/handoff"
	"github.com/moltgo/molt/internal/reserved"
)

// exists guards "one Upgrader per process": the hand-off channel and the
// environment markers can only be consumed once. All other state lives in
// the Upgrader value.
var exists atomic.Bool

// Upgrader replaces the running process with a new one without closing its
// sockets. Create it with [New] early in main, take sockets from it
// ([Upgrader.Listen] and its siblings), call [Upgrader.Ready] when serving,
// [Upgrader.Upgrade] to hand over to a new process, and watch
// [Upgrader.Exit] to know when to drain and exit.
//
// All methods are safe for concurrent use.
type Upgrader struct {
	opts     Options
	log      *slog.Logger
	startDir string // working directory at New: the successor's default Dir
	argv0    string // os.Args[0], made absolute at New when it is a path
	started  time.Time

	// Set by New, then read-only.
	generation uint64
	parent     *parentLink // the channel to the parent; nil in generation 1

	lc  *lifecycle // the state, and the only place that changes it
	inv *inventory // the handles that outlive this generation

	took    atomic.Pointer[process] // the successor that took over; nil before
	reapers sync.WaitGroup          // reapers of successors that took over; end when they exit
	wg      sync.WaitGroup          // goroutines owned by the Upgrader; Stop waits for them
	readyMu sync.Mutex              // serialises Ready; held while it waits for the parent's ACK
	stopped chan struct{}           // closed when Stop has finished

	report *takeoverReport // the outcome for `molt takeover`; nil unless it started this process

	commitHooks hooks[func(context.Context, int)] // OnCommit's

	older olderGenerations // older generations that may still run (storm.go)

	yields yieldHooks // readers of shared packet sockets (yield.go)
}

// New creates the process's Upgrader. If this process was started by an
// Upgrader of a previous generation, New connects to it, removes molt's
// environment markers and starts receiving that generation's inventory,
// whose descriptors are close-on-exec, so processes the service starts
// inherit nothing. The inventory arrives in the background, within
// [Options.ReadyTimeout]: each entry can be claimed as soon as it is in,
// and Listen and the look-ups wait for the entry they ask for (or for the
// whole inventory, if none matches), so a service with thousands of
// listeners claims the first while the last are in transit.
//
// Started with molt's check marker (see [Options.Check]), New does not
// return: it runs the pre-flight check and exits the process.
//
// A process has one Upgrader at a time: New fails with [ErrExists] until
// the previous one has been stopped. On platforms without descriptor
// passing it fails with [ErrNotSupported]. If the hand-off from the parent
// fails, the parent is told why and keeps serving: New returns the error
// for a failure before the inventory (a protocol version mismatch, a
// malformed or missing HELLO, a timeout); a failure of the inventory
// itself is returned by the Listen, look-up, Add and Ready calls that
// depend on it. A MOLT_HANDOFF_FD that does not name the parent's
// channel is an error that names it, and the descriptor is left alone.
func New(opts Options) (*Upgrader, error) {
	if os.Getenv(envCheck) == "1" {
		os.Exit(runCheckMode(opts.Check, opts.readyTimeout()))
	}
	if !platformSupported {
		return nil, ErrNotSupported
	}
	if !exists.CompareAndSwap(false, true) {
		return nil, ErrExists
	}
	u := &Upgrader{
		opts:       opts,
		log:        opts.Logger,
		generation: 1,
		started:    time.Now(),
		stopped:    make(chan struct{}),
	}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	u.startDir, _ = os.Getwd()
	if len(os.Args) > 0 {
		u.argv0 = os.Args[0]
		if strings.ContainsRune(u.argv0, filepath.Separator) && !filepath.IsAbs(u.argv0) {
			u.argv0 = filepath.Join(u.startDir, u.argv0)
		}
	}
	fd, inherited := os.LookupEnv(envHandoffFD)
	os.Unsetenv(envHandoffFD)
	takeoverFrom := os.Getenv(envTakeoverFrom)
	os.Unsetenv(envTakeoverFrom)
	if takeoverFrom == "" {
		takeoverFrom = opts.TakeoverFrom
	}
	u.report = openTakeoverReport()
	var hello struct{ entries int }
	switch {
	case inherited:
		p, h, err := connect(fd, u.opts.readyTimeout())
		if err != nil {
			exists.Store(false)
			return nil, err
		}
		u.parent, u.generation, hello.entries = p, h.Generation, h.Entries
		u.older.parentIs(p.pid, h.Generation-1)
	case takeoverFrom != "":
		p, h, err := connectTakeover(takeoverFrom, u.opts.readyTimeout())
		switch {
		case err == nil:
			u.parent, u.generation, hello.entries = p, h.Generation, h.Entries
			u.older.addServing(p.pid, h.Generation-1)
		case nobodyServes(err):
			u.log.Info("molt: nothing to take over; starting as generation 1", "takeover_from", takeoverFrom, "err", err)
		default:
			u.report.send(err, 0)
			exists.Store(false)
			return nil, err
		}
	}
	// Every record of this Upgrader names the process and its generation.
	u.log = u.log.With("pid", os.Getpid(), "generation", u.generation)
	u.lc = newLifecycle(os.Getpid())
	u.lc.generation = u.generation
	u.inv = newInventory(u.log)
	u.inv.send = u.sendConn
	if u.parent == nil {
		u.log.Info("molt: started")
		return u, nil
	}
	u.inv.expect(hello.entries)
	if u.parent.takeover {
		u.log.Info("molt: taking over", "from_pid", u.parent.pid, "entries", hello.entries)
	} else {
		u.log.Info("molt: started by parent", "parent_pid", u.parent.pid, "entries", hello.entries)
	}
	u.wg.Add(1)
	go u.receive(u.parent, hello.entries) // then watches the parent
	return u, nil
}

// Ready tells the parent generation that this one serves, after closing the
// inherited entries nobody claimed (and removing their Unix socket files,
// which nobody will serve) and writing [Options.PIDFile]. From then on this
// generation owns the socket files it serves, and may be upgraded.
//
// Ready first waits for the whole inventory, and the state if the parent
// sent one ([Upgrader.InheritedState]), and returns the error if their
// transfer failed (the parent, told already, serves on). It then blocks
// until the parent acknowledged (it then stops accepting), or until the
// parent is found gone: a successor whose parent died while it
// initialised serves on its own and Ready returns nil. In generation 1 it
// does not block. A failure to write the PID file is returned, and
// reported to the parent (which serves on, and whose Upgrade returns it as
// a [*ReportedError]), before the parent is told anything else; so is a
// failure to create [Options.TakeoverSocket]. A taker ([Options.TakeoverFrom])
// whose takeover the serving generation ended before its ACK (a timeout,
// a failed commit) gets that generation's reason as the error, and must
// not serve. Calling Ready again returns nil; after Stop it returns
// [ErrStopped].
func (u *Upgrader) Ready() error {
	u.readyMu.Lock()
	defer u.readyMu.Unlock()

	// Every inherited entry must be in before the unclaimed ones can go.
	// A transfer that failed was reported to the parent already.
	receiveErr := u.inv.awaitAll()
	if receiveErr == nil {
		receiveErr = u.awaitState() // and drops a state nobody took (state.go)
	}
	switch u.lc.now() {
	case StateStarting:
	case StateStopping, StateStopped:
		return ErrStopped
	default:
		return nil
	}
	if u.lc.stopRequested() {
		return ErrStopped
	}
	if receiveErr != nil {
		u.report.send(receiveErr, 0)
		return receiveErr
	}
	var takeovers net.Listener
	err := u.writePIDFile()
	if err == nil && u.opts.TakeoverSocket != "" {
		takeovers, err = u.listenTakeover() // takeover.go
	}
	if err != nil {
		if u.parent != nil {
			u.parent.fail(err) // the parent's caller learns why, and it serves on
		}
		u.report.send(err, 0)
		return err
	}
	unclaimed := u.inv.takeOver()
	for _, e := range unclaimed {
		e.closeHandle()
		u.log.Info("molt: closed inherited entry nobody claimed", "entry", e.describe())
	}
	if u.parent != nil {
		if err := u.tellReady(u.parent); err != nil {
			// A refused takeover: the generation that refused serves on,
			// at the socket files too.
			u.log.Error("molt: takeover failed", "from_pid", u.parent.pid, "err", err)
			u.report.send(err, 0)
			return err
		}
	}
	// Only now does the parent stop serving: until its ACK the upgrade may
	// still fail, and the parent would serve on at paths we removed.
	for _, e := range unclaimed {
		u.inv.removeSocketFile(e)
	}
	// The goroutines below are counted before the transition: a Stop
	// that begins once it has happened waits for them (its own transition
	// follows this one), and one that came first makes it fail.
	goroutines := 1
	if takeovers != nil {
		goroutines++
	}
	u.wg.Add(goroutines)
	if !u.lc.transition(StateStarting, StateReady, Event{}) {
		u.wg.Add(-goroutines)
		return ErrStopped
	}
	u.log.Info("molt: ready")
	go func() { // what the next upgrade needs, prepared off this hand-off's path
		defer u.wg.Done()
		u.older.identifyParent()
		warmProcessStart()
	}()
	if takeovers != nil {
		go u.serveTakeovers(takeovers)
	}
	u.report.send(nil, u.generation)
	return nil
}

// Exit returns a channel that is closed when this generation should stop
// serving: after a successful upgrade (drain, then exit) or when Stop was
// called. [Upgrader.Reason] tells which.
func (u *Upgrader) Exit() <-chan struct{} { return u.lc.exit }

// Reason says why [Upgrader.Exit] was closed: [Upgraded] or [Stopped], or
// [NotExited] while it is open.
func (u *Upgrader) Reason() ExitReason { return u.lc.exitReason() }

// State returns the Upgrader's current lifecycle state.
func (u *Upgrader) State() State { return u.lc.now() }

// Generation returns this process's place in the chain: 1 for a process not
// started by an Upgrader, its parent's generation plus one otherwise.
func (u *Upgrader) Generation() uint64 { return u.generation }

// HasParent reports whether this process was started by a previous
// generation (which may have exited since).
func (u *Upgrader) HasParent() bool { return u.generation > 1 }

// TookOver reports whether this process took over from a generation that
// did not start it ([Options.TakeoverFrom]); [Upgrader.ParentPID] is then
// that generation's process ID.
func (u *Upgrader) TookOver() bool { return u.parent != nil && u.parent.takeover }

// ParentPID returns the process ID of the generation that started this
// one (or that this one took over from), or 0 if there was none.
func (u *Upgrader) ParentPID() int {
	if u.parent == nil {
		return 0
	}
	return u.parent.pid
}

// closedChan is closed from the start: a generation 1 has nothing to wait
// for in Committed.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Committed returns a channel closed once no other generation can take
// the service back from this one: in generation 1 at once; in a successor
// when its parent committed the upgrade — when Ready returns, unless the
// parent has it on probation ([Options.Probation]), then when the
// probation passed — or when the parent is gone. Until then this process
// serves but is not yet, for example to systemd, the service's main
// process; package systemd waits for it.
func (u *Upgrader) Committed() <-chan struct{} {
	if u.parent == nil {
		return closedChan
	}
	return u.parent.committed
}

// WaitForParent blocks until the parent generation has stopped or exited
// (at once if there is none), and returns nil then, or ctx's error first.
func (u *Upgrader) WaitForParent(ctx context.Context) error {
	if u.parent == nil {
		return nil
	}
	select {
	case <-u.parent.gone:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Stop ends this generation's use of molt. It interrupts a running upgrade
// (killing that successor), closes Exit (reason [Stopped], unless an
// upgrade already closed it), closes every listener, socket and file of the
// inventory (handles given out included), and, if no upgrade succeeded,
// removes the Unix socket files and the PID file this generation serves. A
// successor that stops before Ready tells its parent it failed and never
// removes a socket file its parent serves.
//
// Stop is synchronous: when it returns, the descriptors are closed and
// every goroutine of the Upgrader has ended, except the reaper of a
// successor that took over, which ends when that process exits. It may be
// called more than once and from several goroutines; every call returns
// when the first has finished. After Stop a new Upgrader may be created.
func (u *Upgrader) Stop() {
	if !u.lc.requestStop() {
		<-u.stopped
		return
	}
	// A running upgrade sees the request, kills its successor and ends;
	// a Ready that was finishing may still move the state once.
	var before State
	for {
		before = u.lc.waitWhile(StateUpgrading)
		if u.lc.transition(before, StateStopping, Event{}) {
			break
		}
	}

	u.inv.close()
	succ := u.took.Load()
	if succ == nil {
		u.removePIDFile()
	}
	if u.parent != nil {
		if before == StateStarting {
			u.parent.fail(errStopBeforeReady)
		} else {
			u.parent.tellStopping()
		}
		u.parent.conn.Close()
	}
	if succ != nil {
		succ.conn.Close()
	}
	u.wg.Wait()
	exists.Store(false)
	u.log.Info("molt: stopped", "state_before", before.String())
	u.lc.transition(StateStopping, StateStopped, Event{})
	close(u.stopped)
}

// Stats is a snapshot of an Upgrader, for status pages and metrics.
type Stats struct {
	PID        int
	ParentPID  int // 0 in generation 1
	Generation uint64
	State      State
	Started    time.Time // when New was called

	// FailedUpgrades counts the failed upgrades this generation started.
	FailedUpgrades int
	// LastUpgrade is the latest upgrade this generation started; nil if
	// none. The chain's earlier upgrades number Generation-1.
	LastUpgrade *UpgradeResult

	// Inventory lists the entries in inventory order.
	Inventory []EntryStats

	// Draining lists the PIDs of the older generations still running,
	// oldest first: those [Options.MaxDraining] counts.
	Draining []int
}

// EntryStats describes one inventory entry.
type EntryStats struct {
	Kind      EntryKind
	Network   string // "tcp", "unix", ...; "" for files
	Addr      string // canonical requested address, or the local address of a named socket
	Local     string // the address it is bound to (a ":0" listener's real port); "" if unclaimed
	Name      string // "" for entries made by Listen and ListenPacket
	Inherited bool   // received from the parent generation
	Claimed   bool   // in use by this generation (inherited entries are unclaimed until Listen or a look-up)
}

// Stats returns a snapshot of the Upgrader's state and inventory.
func (u *Upgrader) Stats() Stats {
	last, failed := u.lc.upgrades()
	return Stats{
		PID:            u.lc.pid,
		ParentPID:      u.ParentPID(),
		Generation:     u.generation,
		State:          u.lc.now(),
		Started:        u.started,
		FailedUpgrades: failed,
		LastUpgrade:    last,
		Inventory:      u.inv.stats(),
		Draining:       u.drainingPIDs(),
	}
}

func init() {
	// molt's own packages add entries under the reserved prefixes.
	reserved.AddListener = func(u any, name string, ln net.Listener) (net.Listener, error) {
		return addNamed(u.(*Upgrader).inv, handoff.KindListener, name, ln, ln.Addr, true)
	}
	reserved.AddPacketConn = func(u any, name string, pc net.PacketConn) (net.PacketConn, error) {
		return addNamed(u.(*Upgrader).inv, handoff.KindPacketConn, name, pc, pc.LocalAddr, true)
	}
	reserved.AddFile = func(u any, name string, f *os.File) error {
		return u.(*Upgrader).inv.addFile(name, f, true)
	}
	reserved.OnYield = func(u any, yield, resume func()) (remove func()) {
		return u.(*Upgrader).yields.add(yield, resume)
	}
}
