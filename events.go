package molt

import (
	"fmt"
	"time"
)

// EventKind names a lifecycle event of an [Upgrader].
type EventKind int

const (
	// EventReady: [Upgrader.Ready] succeeded; this generation serves.
	EventReady EventKind = iota + 1
	// EventUpgradeStarted: [Upgrader.Upgrade] began; a successor is about
	// to start.
	EventUpgradeStarted
	// EventUpgradeSucceeded: the successor is ready. It is delivered
	// before [Upgrader.Exit] is closed, while this process is still the
	// one serving, so an observer can hand over to the successor (tell
	// systemd its PID, say) before this process begins to drain.
	EventUpgradeSucceeded
	// EventUpgradeFailed: the upgrade failed; Err says why. This
	// generation goes on serving.
	EventUpgradeFailed
	// EventDraining: Exit was closed after a successful upgrade; this
	// generation drains now.
	EventDraining
	// EventStopping: [Upgrader.Stop] began.
	EventStopping
	// EventStopped: [Upgrader.Stop] finished; nothing of this Upgrader
	// runs any more.
	EventStopped
)

func (k EventKind) String() string {
	switch k {
	case EventReady:
		return "ready"
	case EventUpgradeStarted:
		return "upgrade-started"
	case EventUpgradeSucceeded:
		return "upgrade-succeeded"
	case EventUpgradeFailed:
		return "upgrade-failed"
	case EventDraining:
		return "draining"
	case EventStopping:
		return "stopping"
	case EventStopped:
		return "stopped"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one lifecycle event, as delivered to observers registered with
// [Upgrader.Observe].
type Event struct {
	Kind       EventKind
	Time       time.Time
	Generation uint64 // this process's generation
	PID        int    // this process

	// SuccessorPID is the successor's process ID in EventUpgradeSucceeded
	// and, if it had started, in EventUpgradeFailed.
	SuccessorPID int
	// Duration is the upgrade's duration so far in EventUpgradeSucceeded
	// and EventUpgradeFailed.
	Duration time.Duration
	// Err is why the upgrade failed, in EventUpgradeFailed.
	Err error
}

// Observe registers fn to be called with every later lifecycle event,
// synchronously, in the goroutine that caused it (the one calling Ready,
// Upgrade or Stop) and in order. fn must return quickly, must not call
// the Upgrader's methods that change state, and must not call Observe or a
// remove function (observers run under the lock those take). The returned
// function removes fn; after it returns, fn is not called again.
func (u *Upgrader) Observe(fn func(Event)) (remove func()) {
	u.obsMu.Lock()
	defer u.obsMu.Unlock()
	o := &observer{fn: fn}
	u.observers = append(u.observers, o)
	return func() {
		u.obsMu.Lock()
		defer u.obsMu.Unlock()
		for i, x := range u.observers {
			if x == o {
				u.observers = append(u.observers[:i:i], u.observers[i+1:]...)
				return
			}
		}
	}
}

type observer struct{ fn func(Event) }

// emit delivers e to the observers registered now. It holds obsMu while it
// calls them, so a removed observer is never called afterwards.
func (u *Upgrader) emit(e Event) {
	e.Time = time.Now()
	e.Generation = u.generation
	e.PID = u.pid
	u.obsMu.Lock()
	defer u.obsMu.Unlock()
	for _, o := range u.observers {
		o.fn(e)
	}
}
