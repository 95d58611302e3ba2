package molt

import "fmt"

// State is where an [Upgrader] is in its lifecycle. Transitions happen only
// inside the Upgrader; [Upgrader.State] reports the current one.
type State int

const (
	// StateStarting: [New] returned and the service is initialising.
	// Next: StateReady ([Upgrader.Ready]) or StateStopped.
	StateStarting State = iota + 1
	// StateReady: the service serves and may be upgraded.
	// Next: StateUpgrading or StateStopped.
	StateReady
	// StateUpgrading: a successor is starting.
	// Next: StateReady (it failed), StateDraining (it is ready) or StateStopped.
	StateUpgrading
	// StateDraining: a successor took over; [Upgrader.Exit] is closed and
	// this generation only finishes its work. Next: StateStopped.
	StateDraining
	// StateStopped: [Upgrader.Stop] was called. Terminal.
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
	case StateStopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// ExitReason says why [Upgrader.Exit] was closed.
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
