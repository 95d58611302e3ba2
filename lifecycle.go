package molt

import (
	"fmt"
	"sync"
	"time"
)

// State is where an [Upgrader] is in its lifecycle. Every change of state
// is one of the transitions of the table below (see the package doc's
// diagram), made by one function, and announced to observers as the
// [Event] of that transition. [Upgrader.State] reports the current state.
type State int

const (
	// StateStarting: [New] returned and the service is initialising.
	StateStarting State = iota + 1
	// StateReady: the service serves and may be upgraded.
	StateReady
	// StateUpgrading: a successor is starting; it has the inventory or is
	// receiving it.
	StateUpgrading
	// StateDraining: a successor took over; [Upgrader.Exit] is closed and
	// this generation only finishes its work.
	StateDraining
	// StateStopping: [Upgrader.Stop] is closing the inventory.
	StateStopping
	// StateStopped: Stop has finished. Terminal.
	StateStopped
)

func (s State) String() string {
	switch s {
	case StateStarting:
		return "starting"
	case StateReady:
		return "ready"
	case StateUpgrading:
		return "upgrading"
	case StateDraining:
		return "draining"
	case StateStopping:
		return "stopping"
	case StateStopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// EventKind names a transition of the lifecycle: each kind is exactly one
// row of the transition table, so an event says where the Upgrader came
// from and where it is now.
type EventKind int

const (
	// EventReady: starting → ready. [Upgrader.Ready] succeeded; this
	// generation serves.
	EventReady EventKind = iota + 1
	// EventUpgradeStarted: ready → upgrading. [Upgrader.Upgrade] began; a
	// successor is about to start.
	EventUpgradeStarted
	// EventUpgradeFailed: upgrading → ready. The upgrade failed; Err says
	// why and this generation goes on serving.
	EventUpgradeFailed
	// EventUpgraded: upgrading → draining. The successor took the ACK and
	// serves; [Upgrader.Exit] is closed, and this generation drains now.
	// (What must happen before the successor is told, such as handing
	// systemd's main PID over, is a commit hook: see [Upgrader.OnCommit].)
	EventUpgraded
	// EventStopping: starting, ready or draining → stopping.
	// [Upgrader.Stop] closes the inventory now (a running upgrade was
	// ended first).
	EventStopping
	// EventStopped: stopping → stopped. Nothing of this Upgrader runs any
	// more.
	EventStopped
)

func (k EventKind) String() string {
	switch k {
	case EventReady:
		return "ready"
	case EventUpgradeStarted:
		return "upgrade-started"
	case EventUpgradeFailed:
		return "upgrade-failed"
	case EventUpgraded:
		return "upgraded"
	case EventStopping:
		return "stopping"
	case EventStopped:
		return "stopped"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// transitions is the lifecycle: every allowed change of state and the
// event it is. Nothing else changes an Upgrader's state.
var transitions = map[[2]State]EventKind{
	{StateStarting, StateReady}:     EventReady,
	{StateReady, StateUpgrading}:    EventUpgradeStarted,
	{StateUpgrading, StateReady}:    EventUpgradeFailed,
	{StateUpgrading, StateDraining}: EventUpgraded,
	{StateStarting, StateStopping}:  EventStopping,
	{StateReady, StateStopping}:     EventStopping,
	{StateDraining, StateStopping}:  EventStopping,
	{StateStopping, StateStopped}:   EventStopped,
}

// ExitReason says why [Upgrader.Exit] was closed. It follows from the
// state Exit was closed for: entering draining means [Upgraded], entering
// stopping (from starting or ready) [Stopped].
type ExitReason int

const (
	// NotExited: Exit is still open.
	NotExited ExitReason = iota
	// Upgraded: a successor became ready and serves; drain and exit.
	Upgraded
	// Stopped: [Upgrader.Stop] was called.
	Stopped
)

func (r ExitReason) String() string {
	switch r {
	case NotExited:
		return "not exited"
	case Upgraded:
		return "upgraded"
	case Stopped:
		return "stopped"
	}
	return fmt.Sprintf("ExitReason(%d)", int(r))
}

// Event is one lifecycle transition, as delivered to observers registered
// with [Upgrader.Observe].
type Event struct {
	Kind       EventKind
	From, To   State // the transition: Kind is the table's name for it
	Time       time.Time
	Generation uint64 // this process's generation
	PID        int    // this process
	// SuccessorPID is the successor's process ID in EventUpgraded and, if
	// it had started, in EventUpgradeFailed.
	SuccessorPID int
	// Duration is the upgrade's duration in EventUpgraded and
	// EventUpgradeFailed.
	Duration time.Duration
	// Err is why the upgrade failed, in EventUpgradeFailed.
	Err error
}

// UpgradeResult describes one upgrade started by this generation.
type UpgradeResult struct {
	Started      time.Time
	Duration     time.Duration // from the Upgrade call until ready or failed
	SuccessorPID int           // 0 if no successor started
	Err          error         // nil if the successor took over
}

// lifecycle owns an Upgrader's state. Its transition method is the only
// writer of state, and everything else that describes the lifecycle is
// derived there: Exit is closed on entering draining or stopping, the exit
// reason is fixed then, and the outcome of an upgrade is recorded on
// leaving upgrading.
type lifecycle struct {
	generation uint64
	pid        int

	mu      sync.Mutex
	changed sync.Cond // broadcast by every transition
	state   State
	reason  ExitReason     // set with exit
	last    *UpgradeResult // the latest upgrade; nil before one ended
	failed  int            // upgrades that failed

	exit chan struct{} // closed on entering draining or stopping

	// stop is the one input that is not a transition: Stop's request,
	// which interrupts whatever waits (a running upgrade, a wait for the
	// inventory or the parent's ACK) so the transitions can follow.
	stop     chan struct{}
	stopOnce sync.Once

	observers hooks[func(Event)] // Observe's
}

func newLifecycle(pid int) *lifecycle {
	lc := &lifecycle{
		generation: 1,
		pid:        pid,
		state:      StateStarting,
		exit:       make(chan struct{}),
		stop:       make(chan struct{}),
	}
	lc.changed.L = &lc.mu
	return lc
}

// transition moves from the state from to the state to, if the Upgrader is
// in from and the table allows it, and announces it. ev carries the
// details of an upgrade's end. It reports false, changing nothing, if the
// Upgrader is not in from.
func (lc *lifecycle) transition(from, to State, ev Event) bool {
	kind, ok := transitions[[2]State{from, to}]
	if !ok {
		panic(fmt.Sprintf("molt: no transition %v → %v", from, to)) // a bug in molt, not a user error
	}
	lc.mu.Lock()
	if lc.state != from {
		lc.mu.Unlock()
		return false
	}
	lc.state = to
	if from == StateUpgrading {
		lc.last = &UpgradeResult{Started: ev.Time, Duration: ev.Duration, SuccessorPID: ev.SuccessorPID, Err: ev.Err}
		if ev.Err != nil {
			lc.failed++
		}
	}
	if lc.reason == NotExited && (to == StateDraining || to == StateStopping) {
		lc.reason = Upgraded
		if to == StateStopping {
			lc.reason = Stopped
		}
		close(lc.exit)
	}
	lc.changed.Broadcast()
	lc.mu.Unlock()

	ev.Kind, ev.From, ev.To = kind, from, to
	ev.Time, ev.Generation, ev.PID = time.Now(), lc.generation, lc.pid
	lc.emit(ev)
	return true
}

// now returns the current state.
func (lc *lifecycle) now() State {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.state
}

// waitWhile blocks while the state is s, and returns the state then.
func (lc *lifecycle) waitWhile(s State) State {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	for lc.state == s {
		lc.changed.Wait()
	}
	return lc.state
}

// requestStop records Stop's request; it reports whether this was the
// first.
func (lc *lifecycle) requestStop() bool {
	first := false
	lc.stopOnce.Do(func() { first = true; close(lc.stop) })
	return first
}

// stopRequested reports whether Stop was called.
func (lc *lifecycle) stopRequested() bool { return isDone(lc.stop) }

// exitReason returns why Exit was closed, or NotExited.
func (lc *lifecycle) exitReason() ExitReason {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.reason
}

// upgrades returns the latest upgrade's result (a copy) and the number of
// failed ones.
func (lc *lifecycle) upgrades() (*UpgradeResult, int) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.last == nil {
		return nil, lc.failed
	}
	last := *lc.last
	return &last, lc.failed
}

// Observe registers fn to be called with every later lifecycle event,
// synchronously, in the goroutine that caused it (the one calling Ready,
// Upgrade or Stop) and in order. fn must return quickly: work that must
// finish before a successor is told it took over belongs in
// [Upgrader.OnCommit]. fn must not call the Upgrader's methods that change
// state, and must not call Observe or a remove function (observers run
// under the lock those take). The returned function removes fn; after it
// returns, fn is not called again.
func (u *Upgrader) Observe(fn func(Event)) (remove func()) {
	return u.lc.observe(fn)
}

func (lc *lifecycle) observe(fn func(Event)) (remove func()) { return lc.observers.add(fn) }

// emit delivers e to the observers registered now. It holds their lock
// while it calls them, so a removed observer is never called afterwards.
func (lc *lifecycle) emit(e Event) {
	lc.observers.run(func(fn func(Event)) { fn(e) })
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
