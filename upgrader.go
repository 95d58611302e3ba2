package molt

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moltgo/molt/internal/handoff"
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

	// Set by New, then read-only.
	generation uint64
	parentPID  int
	parent     *handoff.Conn // hand-off channel to the parent; nil in generation 1
	parentGone chan struct{} // closed when the parent stopped or exited (at once without one)
	parentAck  chan struct{} // closed when the parent acknowledged READY

	stopping chan struct{} // closed when Stop begins
	stopped  chan struct{} // closed when Stop has finished
	stopOnce sync.Once
	wg       sync.WaitGroup // goroutines owned by the Upgrader; Stop waits for them
	reapers  sync.WaitGroup // reapers of successors that took over; end when they exit

	readyMu sync.Mutex // serialises Ready; held while it waits for the parent's ACK
	sendMu  sync.Mutex // serialises sends on the successor's channel after the upgrade

	obsMu     sync.Mutex // protects observers; held while they are called
	observers []*observer

	pid     int       // os.Getpid() at New
	started time.Time // when New was called

	mu      sync.Mutex // protects the fields below and every entry's fields
	state   State
	entries []*entry
	// inherited lists the inherited entries in inventory order, and
	// next is where the first one not yet claimed may be: services claim
	// them in the order they were created, so that entry is tried first.
	// Only a claim out of that order builds unclaimed, an index by
	// address of the entries from next on, kept from then on. (Hashing
	// every entry cost 7 ms of a 10,000-listener hand-off; scanning for
	// each claim, before, 44 ms.)
	inherited []*entry
	next      int
	unclaimed map[inheritKey][]*entry
	// inventoryDone is set once every inherited entry has arrived, or the
	// transfer failed with inventoryErr; inventoryArrived is signalled
	// with each batch and at the end. Generation 1 is done from the start.
	inventoryDone    bool
	inventoryErr     error
	inventoryArrived sync.Cond
	// earlyDups holds duplicates made for the running upgrade before the
	// batch of their entry: of files (see beginUpgrade) and of entries
	// their users closed before it was sent (see keepForHandoffLocked).
	earlyDups map[*entry]int
	exit      chan struct{} // closed once, when reason leaves NotExited
	reason    ExitReason
	upgrading chan struct{}  // closed when the running Upgrade has finished; nil when none runs
	successor *successor     // the successor that took over; nil before
	last      *UpgradeResult // the latest upgrade started by this generation; nil before
	failures  int            // failed upgrades started by this generation
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
// A process has one Upgrader at a time: New fails with [ErrExists] until
// the previous one has been stopped. On platforms without descriptor
// passing it fails with [ErrNotSupported]. If the hand-off from the parent
// fails, the parent is told why and keeps serving: New returns the error
// for a failure before the inventory (a protocol version mismatch, a
// malformed or missing HELLO, a timeout); a failure of the inventory
// itself is returned by the Listen, look-up, Add and Ready calls that
// depend on it.
func New(opts Options) (*Upgrader, error) {
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
		parentGone: make(chan struct{}),
		parentAck:  make(chan struct{}),
		stopping:   make(chan struct{}),
		stopped:    make(chan struct{}),
		exit:       make(chan struct{}),
		state:      StateStarting,
		pid:        os.Getpid(),
		started:    time.Now(),
	}
	u.inventoryArrived.L = &u.mu
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
	if !inherited {
		u.inventoryDone = true
		close(u.parentGone)
		u.log = u.log.With("pid", u.pid, "generation", u.generation)
		u.log.Info("molt: started")
		return u, nil
	}
	hello, err := u.connectParent(fd)
	if err != nil {
		exists.Store(false)
		return nil, err
	}
	// Every record of this Upgrader names the process and its generation.
	u.log = u.log.With("pid", u.pid, "generation", u.generation)
	u.log.Info("molt: started by parent", "parent_pid", u.parentPID, "entries", hello.Entries)
	u.wg.Add(1)
	go u.receiveInventory(hello.Entries) // then watches the parent
	return u, nil
}

// Ready tells the parent generation that this one serves, after closing the
// inherited entries nobody claimed (and removing their Unix socket files,
// which nobody will serve) and writing [Options.PIDFile]. From then on this
// generation owns the socket files it serves, and may be upgraded.
//
// Ready first waits for the whole inventory, and returns the error if its
// transfer failed (the parent, told already, serves on). It then blocks
// until the parent acknowledged (it then stops accepting), or until the
// parent is found gone: a successor whose parent died while it
// initialised serves on its own and Ready returns nil. In generation 1 it
// does not block. A failure to write the PID file is returned, and
// reported to the parent (which serves on, and whose Upgrade returns it as
// a [*ReportedError]), before the parent is told anything else. Calling Ready again returns nil; after Stop it
// returns [ErrStopped].
func (u *Upgrader) Ready() error {
	u.readyMu.Lock()
	defer u.readyMu.Unlock()

	u.mu.Lock()
	// Every inherited entry must be in before the unclaimed ones can go.
	// A transfer that failed was reported to the parent already.
	inventoryErr := u.awaitInventoryLocked()
	switch u.state {
	case StateStopped:
		u.mu.Unlock()
		return ErrStopped
	case StateStarting:
	default:
		u.mu.Unlock()
		return nil
	}
	if inventoryErr != nil {
		u.mu.Unlock()
		return inventoryErr
	}
	if err := u.writePIDFile(); err != nil {
		u.mu.Unlock()
		u.reportFailure(err) // the parent's caller learns why, and it serves on
		return err
	}
	var unclaimed []*entry
	for _, e := range u.entries {
		if e.fd >= 0 {
			unclaimed = append(unclaimed, e)
			continue
		}
		// The parent stops serving what it handed over; files of entries
		// added by hand stay their creator's.
		e.owns = e.path != "" && e.name == ""
	}
	for _, e := range unclaimed {
		u.removeLocked(e)
	}
	// Nothing inherited is left to claim: the bookkeeping can go.
	u.inherited, u.next, u.unclaimed = nil, 0, nil
	u.mu.Unlock()

	for _, e := range unclaimed {
		e.closeHandle()
		u.log.Info("molt: closed inherited entry nobody claimed", "entry", e.describe())
	}
	if u.parent != nil {
		u.tellParentReady()
	}
	// Only now does the parent stop serving: until its ACK the upgrade may
	// still fail, and the parent would serve on at paths we removed.
	for _, e := range unclaimed {
		u.removeSocketFile(e)
	}

	u.mu.Lock()
	if u.state == StateStopped {
		u.mu.Unlock()
		return ErrStopped
	}
	u.state = StateReady
	u.mu.Unlock()
	u.log.Info("molt: ready")
	u.emit(Event{Kind: EventReady})
	return nil
}

// reportFailure tells the parent, if any, that this successor failed and
// why, so that its Upgrade reports the cause rather than an exit status or
// a later Stop. The parent acts on the successor's first message only.
func (u *Upgrader) reportFailure(err error) {
	if u.parent == nil {
		return
	}
	u.sendMu.Lock()
	defer u.sendMu.Unlock()
	u.parent.SetWriteDeadline(time.Now().Add(time.Second))
	u.parent.SendFailed(err.Error())
}

// testHookReadySent, if not nil, is called by Ready right after READY was
// written to the parent, before the wait for its ACK. It is a test hook and
// nil in production: the tests set it (export_test.go) in a successor to
// crash that process between READY and ACK.
var testHookReadySent func()

// tellParentReady sends READY and waits for the parent's ACK. A parent that
// is gone, or does not answer in time, leaves this generation serving alone.
func (u *Upgrader) tellParentReady() {
	timeout := u.opts.readyTimeout()
	u.sendMu.Lock()
	u.parent.SetWriteDeadline(time.Now().Add(timeout))
	err := u.parent.SendReady()
	u.sendMu.Unlock()
	if err != nil {
		u.log.Warn("molt: parent gone before READY; serving alone", "err", err)
		return
	}
	if testHookReadySent != nil {
		testHookReadySent()
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-u.parentAck:
	case <-u.parentGone:
		// watchParent closes parentAck before parentGone: an ACK that
		// arrived just before the end of the channel counts.
		if !isDone(u.parentAck) {
			u.log.Warn("molt: parent gone before it acknowledged READY; serving alone")
		}
	case <-u.stopping:
	case <-t.C:
		u.log.Warn("molt: parent did not acknowledge READY; serving anyway", "waited", timeout)
	}
}

// Exit returns a channel that is closed when this generation should stop
// serving: after a successful upgrade (drain, then exit) or when Stop was
// called. [Upgrader.Reason] tells which.
func (u *Upgrader) Exit() <-chan struct{} { return u.exit }

// Reason says why [Upgrader.Exit] was closed: [Upgraded] or [Stopped], or
// [NotExited] while it is open.
func (u *Upgrader) Reason() ExitReason {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.reason
}

// State returns the Upgrader's current lifecycle state.
func (u *Upgrader) State() State {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.state
}

// Generation returns this process's place in the chain: 1 for a process not
// started by an Upgrader, its parent's generation plus one otherwise.
func (u *Upgrader) Generation() uint64 { return u.generation }

// HasParent reports whether this process was started by a previous
// generation (which may have exited since).
func (u *Upgrader) HasParent() bool { return u.generation > 1 }

// ParentPID returns the process ID of the generation that started this
// one, or 0 if there was none.
func (u *Upgrader) ParentPID() int { return u.parentPID }

// WaitForParent blocks until the parent generation has stopped or exited
// (at once if there is none), and returns nil then, or ctx's error first.
func (u *Upgrader) WaitForParent(ctx context.Context) error {
	select {
	case <-u.parentGone:
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
	first := false
	u.stopOnce.Do(func() { first = true; close(u.stopping) })
	if !first {
		<-u.stopped
		return
	}
	u.emit(Event{Kind: EventStopping})
	u.mu.Lock()
	running := u.upgrading
	u.mu.Unlock()
	if running != nil {
		<-running // Upgrade saw u.stopping, killed and reaped its successor
	}

	u.mu.Lock()
	before := u.state
	u.state = StateStopped
	u.exitLocked(Stopped)
	entries := u.entries
	u.entries = nil
	u.inherited, u.next, u.unclaimed = nil, 0, nil
	succ := u.successor
	u.mu.Unlock()

	handedOver := succ != nil
	for _, e := range entries {
		e.closeHandle()
		if e.owns && !handedOver {
			u.removeSocketFile(e)
		}
	}
	if !handedOver {
		u.removePIDFile()
	}
	if u.parent != nil {
		if before == StateStarting {
			u.sendMu.Lock()
			u.parent.SetWriteDeadline(time.Now().Add(time.Second))
			u.parent.SendFailed("successor called Stop before Ready")
			u.sendMu.Unlock()
		}
		u.parent.Close()
	}
	if succ != nil {
		succ.conn.Close()
	}
	u.wg.Wait()
	exists.Store(false)
	u.log.Info("molt: stopped", "state_before", before.String())
	u.emit(Event{Kind: EventStopped})
	close(u.stopped)
}

// exitLocked closes Exit with reason r, once.
func (u *Upgrader) exitLocked(r ExitReason) {
	if u.reason != NotExited {
		return
	}
	u.reason = r
	close(u.exit)
}

// watchParent reads the parent's messages until the channel ends: an ACK
// after READY, then end-of-file when the parent stops or exits.
func (u *Upgrader) watchParent() {
	defer u.wg.Done()
	defer close(u.parentGone)
	acked := false
	for {
		m, err := u.parent.RecvMessage()
		if err != nil {
			select {
			case <-u.stopping:
			default:
				u.log.Info("molt: parent gone", "parent_pid", u.parentPID, "err", errorOrEOF(err))
				// Nothing more can come or go: a process that serves for
				// months keeps no descriptor for its long-gone parent.
				u.parent.Close()
			}
			return
		}
		if m.Type == handoff.TypeAck && !acked {
			acked = true
			close(u.parentAck)
			continue
		}
		if m.Type == handoff.TypeConn {
			u.receiveConn(m)
			continue
		}
		u.log.Warn("molt: unexpected message from parent", "message_type", m.Type.String())
	}
}

func errorOrEOF(err error) any {
	if err == nil {
		return nil
	}
	return err.Error()
}
