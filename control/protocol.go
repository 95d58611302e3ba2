package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Version is the version of the control protocol this package speaks. A
// request carries it in "v"; a server answers a request of another version
// with [CodeBadVersion] and its own version in the reply's "v".
const Version = 1

// MaxRequestSize is the largest request the server reads, its newline
// included. A longer line is answered with [CodeTooLarge] and the
// connection is closed.
const MaxRequestSize = 4096

// maxReplySize bounds what a client reads as one reply. Replies are small;
// the bound only stops a broken server from using up the client's memory.
const maxReplySize = 1 << 20

// Op names a request of the protocol ([Request.Op]).
type Op string

// The requests of the protocol.
const (
	// OpUpgrade starts an upgrade and is answered when its result is known.
	OpUpgrade Op = "upgrade"
	// OpCheck runs the pre-flight check of the binary an upgrade would
	// start now (molt.Upgrader.Check), without upgrading, and is
	// answered with its result.
	OpCheck Op = "check"
	// OpStop is answered first; then the service stops gracefully.
	OpStop Op = "stop"
	// OpStatus is answered with a [Status].
	OpStatus Op = "status"
)

// Code is the outcome of a request, in [Reply.Code].
type Code string

// The codes a server answers with. Only [CodeOK] means success.
const (
	// CodeOK: the request succeeded.
	CodeOK Code = "ok"
	// CodeFailed: the upgrade failed; [Reply.Upgrade] says why. The
	// answering generation goes on serving.
	CodeFailed Code = "failed"
	// CodeInProgress: another upgrade is running; nothing was started.
	CodeInProgress Code = "in_progress"
	// CodeCheckFailed: the pre-flight check of a check request failed;
	// [Reply.Check] says why. Nothing else changed.
	CodeCheckFailed Code = "check_failed"
	// CodeGenerationChanged: the request named a generation
	// ([Request.IfGeneration]) and another one serves; nothing was
	// started. [Reply.Generation] is the serving one.
	CodeGenerationChanged Code = "generation_changed"
	// CodeTooManyDraining: the service refused to upgrade because too
	// many older generations are still draining
	// (molt.Options.MaxDraining); nothing was started, and the error
	// names them. Upgrade again once one has exited.
	CodeTooManyDraining Code = "too_many_draining"
	// CodeNotReady: the service has not called Ready yet.
	CodeNotReady Code = "not_ready"
	// CodeReplaced: the answering generation was replaced by a successor
	// and only drains; a new connection reaches the successor. [Client]
	// retries such requests by itself.
	CodeReplaced Code = "replaced"
	// CodeStopping: the service is stopping.
	CodeStopping Code = "stopping"
	// CodeBusy: the peer's user has too many connections open (64); try
	// again. Other users' connections never count.
	CodeBusy Code = "busy"
	// CodePermissionDenied: the peer's credentials are not allowed. The
	// server closes the connection after this reply.
	CodePermissionDenied Code = "permission_denied"
	// CodeBadRequest: the request was not a JSON object with exactly the
	// keys "v" and "op", once each.
	CodeBadRequest Code = "bad_request"
	// CodeTooLarge: the request was longer than [MaxRequestSize]. The
	// server closes the connection after this reply.
	CodeTooLarge Code = "too_large"
	// CodeBadVersion: the request's "v" is not a version the server speaks.
	CodeBadVersion Code = "bad_version"
	// CodeUnknownOp: the request's "op" is not one the server knows.
	CodeUnknownOp Code = "unknown_op"
)

// Request is one request: a JSON object on one line, such as
//
//	{"v":1,"op":"upgrade"}
//
// It has exactly these two fields, and an upgrade request may have a
// third, "if_generation": a request with another field, or with one of
// them twice, is refused with [CodeBadRequest] (a later version that adds
// fields will say so in "v"). So a server that does not know a condition
// refuses the request instead of ignoring it.
type Request struct {
	V  int `json:"v"`  // protocol version: [Version]
	Op Op  `json:"op"` // [OpUpgrade], [OpCheck], [OpStop] or [OpStatus]
	// IfGeneration, if not zero, makes an upgrade conditional: it starts
	// only if that generation serves, and is refused with
	// [CodeGenerationChanged] otherwise (see
	// molt.Upgrader.UpgradeIfGeneration).
	IfGeneration uint64 `json:"if_generation,omitempty"`
}

// Reply is the server's answer to one request, a JSON object on one line.
type Reply struct {
	V    int  `json:"v"`  // the server's protocol version
	OK   bool `json:"ok"` // Code == CodeOK
	Code Code `json:"code"`
	Op   Op   `json:"op,omitempty"` // the request's op, if it could be read
	// Error says why the request did not succeed; empty with CodeOK.
	Error string `json:"error,omitempty"`
	// PID and Generation name the process that answered.
	PID        int    `json:"pid,omitempty"`
	Generation uint64 `json:"generation,omitempty"`

	// Upgrade is the result of an upgrade request that started an
	// upgrade (CodeOK or CodeFailed).
	Upgrade *UpgradeResult `json:"upgrade,omitempty"`
	// Check is the result of a check request, described like an upgrade
	// that went no further than its check; if the check failed,
	// SuccessorPID is the check's process, Stage is "check" and Output
	// what it wrote.
	Check *UpgradeResult `json:"check,omitempty"`
	// Status answers a status request.
	Status *Status `json:"status,omitempty"`
}

// UpgradeResult describes one upgrade: the one a request started, or the
// latest of the chain in [Status.LastUpgrade].
type UpgradeResult struct {
	OK bool `json:"ok"` // the successor took over
	// PID and Generation name the process that started the successor.
	PID        int    `json:"pid"`
	Generation uint64 `json:"generation"`
	// SuccessorPID is the successor's process ID; 0 if it never started.
	// After a successful upgrade it is the PID that serves now, as
	// generation Generation+1.
	SuccessorPID int           `json:"successor_pid"`
	Started      time.Time     `json:"started"`
	Duration     time.Duration `json:"duration_ns"` // until ready or failed

	// The fields below describe a failure and are empty on success.

	// Error is the whole error message, for people; Reason is its cause
	// (such as "exit status 3", the timeout, or what the successor
	// reported).
	Error  string `json:"error,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Stage is how far the successor got: "check", "start", "hand-off",
	// "init" or "probation".
	Stage string `json:"stage,omitempty"`
	// ExitStatus is how the successor ended ("exit status 3", "signal:
	// killed"); ExitCode is set if it exited by itself.
	ExitStatus string `json:"exit_status,omitempty"`
	ExitCode   *int   `json:"exit_code,omitempty"`
	// Output is what the new binary's pre-flight check wrote (at stage
	// "check"; at most molt.MaxCheckOutput bytes).
	Output string `json:"output,omitempty"`
}

// Successor returns the generation that serves after a successful upgrade.
func (r *UpgradeResult) Successor() uint64 { return r.Generation + 1 }

// Status describes the serving process, as [StatusOf] sees it.
type Status struct {
	PID        int       `json:"pid"`
	ParentPID  int       `json:"parent_pid"` // 0 in generation 1
	Generation uint64    `json:"generation"`
	State      string    `json:"state"` // molt.State: "ready", "upgrading", ...
	Started    time.Time `json:"started"`
	// Uptime is the time since Started when the status was taken.
	Uptime time.Duration `json:"uptime_ns"`

	// Upgrades counts the successful upgrades of the chain that led to
	// this process (Generation-1); FailedUpgrades the failed ones, as far
	// as the control history knows (this generation's alone without it).
	Upgrades       uint64 `json:"upgrades"`
	FailedUpgrades int    `json:"failed_upgrades"`
	// LastUpgrade is the latest upgrade of the chain, successful or not;
	// nil if none is known.
	LastUpgrade *UpgradeResult `json:"last_upgrade,omitempty"`

	// Listeners are the listening and packet sockets of the inventory.
	Listeners []Listener `json:"listeners"`

	// Draining lists the PIDs of the older generations still running,
	// oldest first: those molt.Options.MaxDraining counts.
	Draining []int `json:"draining,omitempty"`
}

// Listener is one socket of the inventory.
type Listener struct {
	Kind      string `json:"kind"`    // "listener" or "packet-conn"
	Network   string `json:"network"` // "tcp", "unix", "udp", ...
	Address   string `json:"address"`
	Name      string `json:"name,omitempty"` // for sockets added by name
	Inherited bool   `json:"inherited"`      // received from the previous generation
	Control   bool   `json:"control,omitempty"`
}

// errRequest is a request the server cannot serve, with the code it
// answers.
type errRequest struct {
	code Code
	msg  string
}

func (e *errRequest) Error() string { return e.msg }

// decodeRequest parses one request line (without its newline). It accepts
// a JSON object whose only keys are "v", equal to [Version], "op", a
// known op, each exactly once, and for an upgrade "if_generation", a
// positive integer, at most once; surrounding white space is ignored.
// Otherwise it returns an *errRequest with the code to answer and, if it
// could be read, the op.
//
// Keys are compared exactly, after JSON unescaping: encoding/json would
// match "OP" to "op" and let the last of two "op" keys win, so that
// {"v":1,"op":"status","op":"upgrade"} would read as an upgrade to this
// server and as a status request to a proxy or log filter that keeps the
// first. A request that different readers could read differently is
// refused instead.
func decodeRequest(line []byte) (Request, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return Request{}, &errRequest{CodeBadRequest, "a request is a JSON object on one line"}
	}
	f, err := scanRequest(line)
	var r Request
	if f.op != nil {
		r.Op = Op(*f.op)
	}
	switch {
	case err != nil:
		return r, err
	case f.v == nil:
		return r, &errRequest{CodeBadRequest, `missing protocol version "v"`}
	case *f.v != Version:
		// Before the unknown keys: a later version may have more of them,
		// and its client should learn that the version is the problem.
		return r, &errRequest{CodeBadVersion, fmt.Sprintf("protocol version %d not supported (this server speaks %d)", *f.v, Version)}
	case f.unknown != nil:
		return r, &errRequest{CodeBadRequest, fmt.Sprintf(`unknown field %s (a version %d request has only "v", "op" and, for an upgrade, "if_generation")`, quoteShort(*f.unknown), Version)}
	case f.op == nil || r.Op == "":
		return r, &errRequest{CodeBadRequest, `missing "op"`}
	}
	r.V = *f.v
	switch r.Op {
	case OpUpgrade, OpCheck, OpStop, OpStatus:
		if f.ifGeneration != nil {
			if r.Op != OpUpgrade {
				return r, &errRequest{CodeBadRequest, fmt.Sprintf(`field "if_generation" is for an upgrade, not for %s`, r.Op)}
			}
			r.IfGeneration = *f.ifGeneration
		}
		return r, nil
	}
	return Request{V: r.V}, &errRequest{CodeUnknownOp, fmt.Sprintf("unknown op %s (want upgrade, check, stop or status)", quoteShort(string(r.Op)))}
}

// requestFields are the keys of a request object as scanRequest found
// them; nil where absent.
type requestFields struct {
	v            *int
	op           *string
	ifGeneration *uint64
	unknown      *string // the first key other than these
}

// scanRequest reads the keys of the JSON object line one by one. It fails
// on malformed JSON, trailing data, a repeated "v" or "op", and values of
// the wrong type; unknown keys are recorded for decodeRequest to judge
// after the version.
func scanRequest(line []byte) (requestFields, error) {
	var f requestFields
	dec := json.NewDecoder(bytes.NewReader(line))
	if _, err := dec.Token(); err != nil { // the '{' the caller saw
		return f, malformed(err)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return f, malformed(err)
		}
		key, ok := t.(string)
		if !ok {
			return f, &errRequest{CodeBadRequest, "malformed request: invalid JSON"}
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return f, malformed(err)
		}
		switch key {
		case "v":
			if f.v != nil {
				return f, &errRequest{CodeBadRequest, `duplicate field "v"`}
			}
			var v int
			if bytes.Equal(raw, []byte("null")) || json.Unmarshal(raw, &v) != nil {
				return f, &errRequest{CodeBadRequest, `field "v" must be an integer`}
			}
			f.v = &v
		case "op":
			if f.op != nil {
				return f, &errRequest{CodeBadRequest, `duplicate field "op"`}
			}
			var op string
			if bytes.Equal(raw, []byte("null")) || json.Unmarshal(raw, &op) != nil {
				return f, &errRequest{CodeBadRequest, `field "op" must be a string`}
			}
			f.op = &op
		case "if_generation":
			if f.ifGeneration != nil {
				return f, &errRequest{CodeBadRequest, `duplicate field "if_generation"`}
			}
			var g uint64
			if bytes.Equal(raw, []byte("null")) || json.Unmarshal(raw, &g) != nil || g == 0 {
				return f, &errRequest{CodeBadRequest, `field "if_generation" must be a positive integer`}
			}
			f.ifGeneration = &g
		default:
			if f.unknown == nil {
				f.unknown = &key
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the '}'
		return f, malformed(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return f, &errRequest{CodeBadRequest, "malformed request: data after the JSON object"}
	}
	return f, nil
}

func malformed(err error) *errRequest {
	return &errRequest{CodeBadRequest, "malformed request: " + jsonProblem(err)}
}

// jsonProblem describes a JSON error without echoing the input at length.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be a %s", te.Field, te.Type)
	}
	return "invalid JSON"
}

// quoteShort quotes s for an error message, cut to a few dozen bytes.
func quoteShort(s string) string {
	const max = 32
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

// encodeLine marshals v as one line of JSON, newline included.
func encodeLine(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Requests and replies are plain structs: they always marshal.
		panic("control: " + err.Error())
	}
	return append(b, '\n')
}
