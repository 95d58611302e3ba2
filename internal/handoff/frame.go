package handoff

import (
	"encoding/binary"
	"strconv"
)

// Version is the protocol version this package writes into every frame and
// the only one it accepts; a frame carrying another version is rejected with
// a *[VersionError].
const Version uint8 = 1

// MaxPayload is the largest payload, in bytes, a frame may carry. A header
// announcing more is [ErrMalformed]; senders split inventories so that no
// frame exceeds it.
const MaxPayload = 1 << 20

// MaxFDsPerMessage is the most descriptors sent with one INVENTORY frame (one
// sendmsg), and the capacity of the receive buffer for control messages. It
// stays below Linux's SCM_MAX_FD (253).
const MaxFDsPerMessage = 200

// MaxEntries is the largest number of entries a HELLO may announce or an
// INVENTORY payload may declare; more is [ErrMalformed].
const MaxEntries = 1 << 17

// MaxGeneration is the largest generation a HELLO may announce; more is
// [ErrMalformed], and generation 1 is the first. A generation counter
// that wrapped around would make the next successor generation 0 (or 1, a
// process with no parent); 2^32 upgrades, one a second, take 136 years.
const MaxGeneration = 1 << 32

// headerLen is the size of a frame header: length (4), version (1), type (1).
const headerLen = 6

// Type identifies the kind of a frame.
type Type uint8

// The frame types, in conversation order. See the package documentation.
const (
	TypeHello     Type = 1 // parent → child: generation, parent PID, entry count
	TypeInventory Type = 2 // parent → child: a batch of entries with their descriptors
	TypeReady     Type = 3 // child → parent: the child serves
	TypeFailed    Type = 4 // child → parent: the child gives up, with a reason
	TypeAck       Type = 5 // parent → child: the parent committed the upgrade
	TypeConn      Type = 6 // parent → child, after ACK: an idle connection to serve, with its descriptor
	// Probation (see the package documentation): the parent keeps the
	// service's sockets for a while after the ACK and takes the service
	// back if the child dies.
	TypeProbation Type = 7 // parent → child, right before ACK: a probation follows it
	TypeCommitted Type = 8 // parent → child, after ACK: the probation passed; the parent drains
	TypeStop      Type = 9 // child → parent, during a probation: the child stops on purpose; do not take the service back
	// State (state.go): the application's blob, after the inventory,
	// when HELLO announced it.
	TypeState Type = 10 // parent → child, after INVENTORY: the state's header, then its data in order
	// TypePredecessors: parent → child, after READY and before PROBATION
	// and ACK: the older generations still running (see [Process]); sent
	// only when there are any.
	TypePredecessors Type = 11
	// TypeTakeover: taker → serving generation, the first frame on a
	// connection to its takeover socket: a process that the serving
	// generation did not start asks to take over. The conversation then
	// goes on from HELLO as with a started child.
	TypeTakeover Type = 12
)

// String returns the frame type's protocol name ("HELLO", "INVENTORY",
// "READY", "FAILED", "ACK", ...), or "Type(n)" for an unknown value.
func (t Type) String() string {
	switch t {
	case TypeHello:
		return "HELLO"
	case TypeInventory:
		return "INVENTORY"
	case TypeReady:
		return "READY"
	case TypeFailed:
		return "FAILED"
	case TypeAck:
		return "ACK"
	case TypeConn:
		return "CONN"
	case TypeProbation:
		return "PROBATION"
	case TypeCommitted:
		return "COMMITTED"
	case TypeStop:
		return "STOP"
	case TypeState:
		return "STATE"
	case TypePredecessors:
		return "PREDECESSORS"
	case TypeTakeover:
		return "TAKEOVER"
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

// valid reports whether t is one of the defined frame types.
func (t Type) valid() bool { return t >= TypeHello && t <= TypeTakeover }

// empty reports whether frames of type t carry no payload.
func (t Type) empty() bool {
	switch t {
	case TypeReady, TypeAck, TypeProbation, TypeCommitted, TypeStop, TypeTakeover:
		return true
	}
	return false
}

// AppendFrame appends a complete frame (header and payload) of type t,
// written with [Version], to dst and returns the extended slice. It does not
// validate its arguments: callers keep payload within [MaxPayload] (the
// receiver rejects larger frames) and use empty payloads for READY, ACK,
// PROBATION, COMMITTED and STOP.
func AppendFrame(dst []byte, t Type, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(2+len(payload)))
	dst = append(dst, Version, byte(t))
	return append(dst, payload...)
}

// ParseHeader decodes the 6-byte header of a frame and returns its type and
// the number of payload bytes that follow it. The version is checked first:
// a frame of another version yields a *[VersionError]. A length shorter than
// the version and type bytes, a payload larger than [MaxPayload], an unknown
// type, or a non-empty payload on a READY, ACK, PROBATION, COMMITTED or
// STOP frame yields an error
// wrapping [ErrMalformed].
func ParseHeader(hdr [6]byte) (t Type, payloadLen int, err error) {
	if hdr[4] != Version {
		return 0, 0, &VersionError{Got: hdr[4], Want: Version}
	}
	length := binary.BigEndian.Uint32(hdr[:4])
	if length < 2 {
		return 0, 0, malformed("frame length %d is shorter than its version and type", length)
	}
	if n := uint64(length) - 2; n > MaxPayload {
		return 0, 0, malformed("payload of %d bytes exceeds %d", n, MaxPayload)
	}
	t, payloadLen = Type(hdr[5]), int(length-2)
	if !t.valid() {
		return 0, 0, malformed("unknown frame type %d", hdr[5])
	}
	if t.empty() && payloadLen != 0 {
		return 0, 0, malformed("%v frame with a payload of %d bytes, want none", t, payloadLen)
	}
	return t, payloadLen, nil
}
