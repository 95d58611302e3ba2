package molt

import (
	"errors"
	"fmt"
	"os"
)

// Errors returned by the Upgrader. Compare with [errors.Is]; they may be
// wrapped with more detail.
var (
	// ErrNotSupported is returned by [New] on platforms without Unix
	// descriptor passing (Windows, Plan 9, js/wasm).
	ErrNotSupported = errors.New("molt: not supported on this platform")

	// ErrExists is returned by [New] while another Upgrader of this process
	// has not been stopped. A process has one Upgrader at a time.
	ErrExists = errors.New("molt: an Upgrader already exists in this process (Stop it first)")

	// ErrNotReady is returned by [Upgrader.Upgrade] before [Upgrader.Ready]
	// was called: a generation that is still initialising cannot start the next.
	ErrNotReady = errors.New("molt: not ready yet (call Ready before Upgrade)")

	// ErrUpgradeInProgress is returned by [Upgrader.Upgrade] while another
	// upgrade is running, and by the Listen and Add methods during one (a
	// socket created then would not reach the successor).
	ErrUpgradeInProgress = errors.New("molt: upgrade in progress")

	// ErrGenerationChanged is returned by [Upgrader.UpgradeIfGeneration]
	// when this process does not serve as the generation the caller named:
	// someone else upgraded the service since the caller looked. Nothing
	// was started.
	ErrGenerationChanged = errors.New("molt: the serving generation is not the one named")

	// ErrUpgraded is returned by [Upgrader.Upgrade] and the Listen and Add
	// methods after an upgrade succeeded: this generation only drains now.
	ErrUpgraded = errors.New("molt: already upgraded")

	// ErrStopped is returned by every method that starts something after
	// [Upgrader.Stop] began, and by an Upgrade that Stop interrupted.
	ErrStopped = errors.New("molt: stopping")

	// ErrReadyTimeout is the cause in a [*ChildError] when the successor did
	// not call Ready within [Options.ReadyTimeout].
	ErrReadyTimeout = errors.New("molt: successor not ready before the timeout")

	// ErrNotFound is returned by the look-ups ([Upgrader.Listener] and its
	// siblings) when no entry of that kind has that name.
	ErrNotFound = errors.New("molt: no inventory entry with that name")

	// ErrNameInUse is returned by the Add methods when the inventory already
	// holds an entry of that kind and name (claim an inherited one with the
	// look-up instead).
	ErrNameInUse = errors.New("molt: inventory name already in use")

	// ErrReservedName is returned by the Add methods for a name that
	// begins with "molt/" or "systemd/": those belong to molt's own
	// packages.
	ErrReservedName = errors.New("molt: inventory name is reserved for molt's own packages")

	// ErrNotHandable: the connection cannot change process. No molt
	// listener accepted it (or the wrappers around it do not lead to one
	// through NetConn), or its server said so.
	ErrNotHandable = errors.New("molt: connection cannot be handed over")

	// ErrConnBusy: request bytes arrived since the connection was marked
	// idle, or its server is not waiting for the next request in a read
	// of the size it named; the server must answer it itself.
	ErrConnBusy = errors.New("molt: connection is not idle")

	// ErrNoSuccessor: no successor has taken over from this generation (or
	// it is gone), so there is nobody to hand a connection to.
	ErrNoSuccessor = errors.New("molt: no successor to hand the connection to")

	// ErrRolledBack matches (with [errors.Is]) the [*ChildError] of an
	// upgrade whose successor died, or asked to be replaced, during
	// [Options.Probation]: this generation took the service back.
	ErrRolledBack = errors.New("molt: rolled back")

	// ErrNoProbation is returned by [Upgrader.RollBack] when no parent
	// generation is on probation for this one: there is nobody to take
	// the service back.
	ErrNoProbation = errors.New("molt: no parent generation on probation")

	// ErrNoState is returned by [Upgrader.InheritedState] in generation 1
	// and when the parent generation saved no state (it has no
	// [Options.SaveState]): start fresh.
	ErrNoState = errors.New("molt: no inherited state")

	// ErrStateVersion matches the [*StateVersionError] of
	// [Upgrader.InheritedState] when the parent saved its state under
	// another version.
	ErrStateVersion = errors.New("molt: inherited state has another version")

	// ErrStateTaken is returned by [Upgrader.InheritedState] once the
	// state has been taken by an earlier call, or dropped by Ready.
	ErrStateTaken = errors.New("molt: inherited state no longer here")

	// ErrStateTooLarge is the cause in the [*ChildError] ([StageStart])
	// of an upgrade whose [Options.SaveState] returned more than
	// [MaxStateSize] bytes, or a version longer than [MaxStateVersionLen].
	ErrStateTooLarge = errors.New("molt: state too large to hand on")

	// ErrTooManyDraining is returned by [Upgrader.Upgrade] when
	// [Options.MaxDraining] older generations are still running: nothing
	// was started, and this generation goes on serving. The message names
	// their PIDs; upgrade again once one has exited.
	ErrTooManyDraining = errors.New("molt: too many older generations still draining")
)

// errStopBeforeReady is what a successor that stops before Ready tells its
// parent.
var errStopBeforeReady = errors.New("successor called Stop before Ready")

// Stage says how far a successor got before an upgrade failed.
type Stage int

const (
	// StageStart: the successor process could not be started, or was not
	// because [Options.Command] or [Options.SaveState] failed first.
	StageStart Stage = iota + 1
	// StageHandoff: the inventory (or the state, [Options.SaveState])
	// could not be written to the successor while it ran (the deadline
	// passed, or ctx ended, mid-send).
	StageHandoff
	// StageInit: the successor ran but did not become ready: it exited,
	// was killed, hung or reported a failure, whether or not it had read
	// the whole inventory.
	StageInit
	// StageProbation: the successor had taken over, but died or asked to
	// be replaced within [Options.Probation]; this generation took the
	// service back (the error matches [ErrRolledBack]).
	StageProbation
	// StageCheck: the new binary's pre-flight check failed (see
	// [Options.Check]); no successor was started for real. The cause is
	// a [*CheckError] with the check's output.
	StageCheck
)

func (s Stage) String() string {
	switch s {
	case StageStart:
		return "start"
	case StageHandoff:
		return "hand-off"
	case StageInit:
		return "init"
	case StageProbation:
		return "probation"
	case StageCheck:
		return "check"
	}
	return fmt.Sprintf("Stage(%d)", int(s))
}

// ChildError reports why an upgrade failed. [Upgrader.Upgrade] returns it
// for every failure that happened after it decided to start a successor; the
// successor has then been killed (with its process group) and reaped, and
// this generation goes on serving.
//
// Err is the cause: an [*exec.ExitError] when the successor exited or was
// killed by a signal on its own, [ErrReadyTimeout], a context error,
// [ErrStopped], a [*ReportedError] carrying what the successor said, or an
// I/O or protocol error of the hand-off. Use [errors.Is] and [errors.As].
type ChildError struct {
	PID   int   // the successor's process ID; 0 if it never started
	Stage Stage // how far it got
	Err   error // the cause
	// State is the successor's exit state once it was reaped; nil if it
	// never started.
	State *os.ProcessState
}

func (e *ChildError) Error() string {
	if e.PID == 0 {
		what := "successor"
		if e.Stage == StageCheck {
			what = "the new binary's check"
		}
		return fmt.Sprintf("molt: upgrade failed: %s did not start: %v", what, e.Err)
	}
	switch e.Stage {
	case StageCheck:
		return fmt.Sprintf("molt: upgrade failed: the new binary's check (pid %d) failed: %v", e.PID, e.Err)
	case StageProbation:
		return fmt.Sprintf("molt: rolled back: successor pid %d during probation: %v", e.PID, e.Err)
	}
	return fmt.Sprintf("molt: upgrade failed: successor pid %d failed during %s: %v", e.PID, e.Stage, e.Err)
}

func (e *ChildError) Unwrap() error { return e.Err }

// Is reports whether e is a rollback ([ErrRolledBack]); the cause is
// matched through Unwrap.
func (e *ChildError) Is(target error) bool {
	return target == ErrRolledBack && e.Stage == StageProbation
}

// ReportedError is the failure a successor reported over the hand-off
// channel before it exited: its [New] failed (for example, it speaks another
// protocol version) or it called [Upgrader.Stop] before [Upgrader.Ready].
type ReportedError struct {
	Reason string
}

func (e *ReportedError) Error() string { return "successor reported: " + e.Reason }
