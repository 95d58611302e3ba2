package handoff

import (
	"errors"
	"fmt"
)

// ErrMalformed reports a frame or payload that breaks the protocol: an
// unknown frame type, a length out of bounds, a truncated or over-long
// payload, a field out of range, or descriptors that do not match the
// entries they travel with. Errors from this package wrap it with detail
// (use errors.Is), for example
// "handoff: malformed frame: payload of 5000000 bytes exceeds 1048576".
var ErrMalformed = errors.New("handoff: malformed frame")

// ErrNotSupported is returned by every Conn method, Pair and FromFD on
// platforms without Unix domain sockets and descriptor passing (Windows,
// js/wasm, wasip1, plan9).
var ErrNotSupported = errors.New("handoff: not supported on this platform")

// VersionError reports a frame written with a protocol version other than
// [Version]. It is returned (as a *VersionError, so errors.As with a
// **VersionError target finds it) by [ParseHeader] and by every Conn method
// that reads frames. It is not an [ErrMalformed]: the peer is well-behaved
// but speaks another version.
type VersionError struct {
	Got  uint8 // the version in the frame
	Want uint8 // the version this process speaks, [Version]
}

// Error returns "handoff: peer speaks protocol version <Got>, this process
// speaks <Want>".
func (e *VersionError) Error() string {
	return fmt.Sprintf("handoff: peer speaks protocol version %d, this process speaks %d", e.Got, e.Want)
}

// malformed returns ErrMalformed wrapped with a formatted detail.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// RefusedError is the FAILED frame a serving generation sends a taker
// (see TAKEOVER) in place of HELLO or of the rest of the conversation:
// it refuses the takeover, or the takeover failed on its side, for
// Reason. A Recv that expected another frame returns it.
type RefusedError struct {
	Reason string
}

func (e *RefusedError) Error() string { return "handoff: the serving generation refused: " + e.Reason }

// refusal decodes a FAILED frame met where another was expected.
func refusal(p []byte) error {
	r, err := UnmarshalReason(p)
	if err != nil {
		return err
	}
	return &RefusedError{Reason: r}
}
