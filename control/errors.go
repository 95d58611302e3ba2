package control

import (
	"errors"
	"fmt"
)

// Errors of this package. Compare with [errors.Is]; they are wrapped with
// detail, and a reply that is not [CodeOK] is an [*Error] that unwraps to
// one of them.
var (
	// ErrNotSupported is returned by [Listen] where peer credentials cannot
	// be read (Windows, and Unix systems other than Linux, macOS and
	// FreeBSD): a control socket without them would be unauthenticated.
	ErrNotSupported = errors.New("control: not supported on this platform")

	// ErrUnreachable is returned by [Client] calls when nothing serves the
	// socket: the file does not exist, or connecting was refused.
	ErrUnreachable = errors.New("control: socket unreachable")

	// ErrPermissionDenied is returned by [Client] calls when the socket
	// file's permissions forbid connecting, or when the server refused the
	// peer's credentials ([CodePermissionDenied]).
	ErrPermissionDenied = errors.New("control: permission denied")

	// ErrNoReply is returned by [Client] calls that got no reply: the
	// context ended or the connection was lost. The outcome is unknown: an
	// upgrade may still succeed; ask with [Client.Status].
	ErrNoReply = errors.New("control: no reply")

	// ErrProtocol is returned by [Client] calls when the reply could not be
	// read, or when the server rejected the request as malformed
	// ([CodeBadRequest], [CodeTooLarge], [CodeBadVersion],
	// [CodeUnknownOp]).
	ErrProtocol = errors.New("control: protocol error")

	// ErrUpgradeFailed is returned by [Client.Upgrade] when the successor
	// did not take over ([CodeFailed]); the [*Error]'s Upgrade says why.
	ErrUpgradeFailed = errors.New("control: upgrade failed")

	// ErrInProgress is returned by [Client.Upgrade] when another upgrade
	// was running ([CodeInProgress]); nothing was started.
	ErrInProgress = errors.New("control: upgrade in progress")

	// ErrCheckFailed is returned by [Client.Check] when the pre-flight
	// check failed ([CodeCheckFailed]); the [*Error]'s Check says why.
	ErrCheckFailed = errors.New("control: check failed")

	// ErrGenerationChanged is returned by [Client.UpgradeIfGeneration]
	// when another generation than the one named serves
	// ([CodeGenerationChanged]); nothing was started.
	ErrGenerationChanged = errors.New("control: generation changed")
	// ErrTooManyDraining is returned by [Client.Upgrade] when the service
	// refused because too many older generations were still draining
	// ([CodeTooManyDraining]); nothing was started.
	ErrTooManyDraining = errors.New("control: too many older generations still draining")

	// ErrUnavailable is returned by [Client] calls the service cannot serve
	// now: it is not ready, stopping, busy, or was replaced while the
	// client kept reaching the old generation ([CodeNotReady],
	// [CodeStopping], [CodeBusy], [CodeReplaced]).
	ErrUnavailable = errors.New("control: service unavailable")
)

// Error is a reply that is not [CodeOK]. It unwraps to the sentinel of its
// code: [ErrUpgradeFailed], [ErrCheckFailed], [ErrInProgress],
// [ErrTooManyDraining], [ErrGenerationChanged],
// [ErrPermissionDenied], [ErrUnavailable] or [ErrProtocol].
type Error struct {
	Op      Op // the request: OpUpgrade, OpStop or OpStatus
	Code    Code
	Message string // the reply's error text
	// Upgrade is the failed upgrade's result with [CodeFailed]; nil
	// otherwise.
	Upgrade *UpgradeResult
	// Check is the failed check's result with [CodeCheckFailed]; nil
	// otherwise.
	Check *UpgradeResult
}

func (e *Error) Error() string {
	return fmt.Sprintf("control: %s: %s", e.Op, e.Message)
}

// Unwrap returns the sentinel error of e's code.
func (e *Error) Unwrap() error { return codeError(e.Code) }

// codeError maps a reply code to its sentinel.
func codeError(c Code) error {
	switch c {
	case CodeFailed:
		return ErrUpgradeFailed
	case CodeInProgress:
		return ErrInProgress
	case CodeGenerationChanged:
		return ErrGenerationChanged
	case CodeCheckFailed:
		return ErrCheckFailed
	case CodeTooManyDraining:
		return ErrTooManyDraining
	case CodePermissionDenied:
		return ErrPermissionDenied
	case CodeNotReady, CodeStopping, CodeBusy, CodeReplaced:
		return ErrUnavailable
	}
	return ErrProtocol
}
