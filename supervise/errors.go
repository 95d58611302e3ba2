package supervise

import "errors"

// Errors of this package. Compare with [errors.Is]. Upgrade's errors
// also match molt's sentinels where they mean the same
// (molt.ErrUpgradeInProgress, molt.ErrStopped, molt.ErrNotReady,
// molt.ErrGenerationChanged), so that package control answers them with
// its codes.
var (
	// ErrNotSupported is returned by [New] where supervising is not
	// implemented (outside Linux).
	ErrNotSupported = errors.New("supervise: not supported on this platform")
	// ErrGrace says that a new instance was not ready within
	// [Options.Grace].
	ErrGrace = errors.New("supervise: the new instance was not ready within the grace period")
	// ErrExited says that an instance exited (or was killed) before it
	// was ready.
	ErrExited = errors.New("supervise: the instance exited before it was ready")
	// ErrStart says that an instance could not be started.
	ErrStart = errors.New("supervise: the instance could not be started")
	// ErrBadSocket is returned by [ParseSocket] for a malformed --listen
	// value.
	ErrBadSocket = errors.New("supervise: bad socket")
	// ErrBadProbe is returned by [ParseProbe] for a malformed --ready
	// value.
	ErrBadProbe = errors.New("supervise: bad readiness probe")
)
