package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name   string
		line   string
		want   Request
		code   Code // "" for success
		errHas string
	}{
		{name: "upgrade", line: `{"v":1,"op":"upgrade"}`, want: Request{V: 1, Op: OpUpgrade}},
		{name: "stop", line: `{"op":"stop","v":1}`, want: Request{V: 1, Op: OpStop}},
		{name: "conditional upgrade", line: `{"v":1,"op":"upgrade","if_generation":7}`, want: Request{V: 1, Op: OpUpgrade, IfGeneration: 7}},
		{name: "condition on a status", line: `{"v":1,"op":"status","if_generation":7}`, code: CodeBadRequest, errHas: `"if_generation" is for an upgrade`},
		{name: "condition zero", line: `{"v":1,"op":"upgrade","if_generation":0}`, code: CodeBadRequest, errHas: "positive integer"},
		{name: "condition negative", line: `{"v":1,"op":"upgrade","if_generation":-1}`, code: CodeBadRequest, errHas: "positive integer"},
		{name: "condition a string", line: `{"v":1,"op":"upgrade","if_generation":"1"}`, code: CodeBadRequest, errHas: "positive integer"},
		{name: "condition null", line: `{"v":1,"op":"upgrade","if_generation":null}`, code: CodeBadRequest, errHas: "positive integer"},
		{name: "condition twice", line: `{"v":1,"op":"upgrade","if_generation":1,"if_generation":2}`, code: CodeBadRequest, errHas: `duplicate field "if_generation"`},
		{name: "status with spaces and CR", line: " {\"v\": 1, \"op\": \"status\"}\r", want: Request{V: 1, Op: OpStatus}},
		{name: "escaped key", line: `{"\u0076":1,"op":"st\u0061tus"}`, want: Request{V: 1, Op: OpStatus}},
		{name: "unknown field", line: `{"v":1,"op":"status","id":"x","later":{"a":[1]}}`, code: CodeBadRequest, errHas: `unknown field "id"`},
		{name: "unknown field first", line: `{"x":null,"v":1,"op":"status"}`, code: CodeBadRequest, errHas: `unknown field "x"`},
		{name: "key of another case", line: `{"V":1,"OP":"status"}`, code: CodeBadRequest},
		{name: "op of another case", line: `{"v":1,"op":"status","Op":"upgrade"}`, code: CodeBadRequest, errHas: `unknown field "Op"`},
		{name: "duplicate op", line: `{"v":1,"op":"status","op":"upgrade"}`, code: CodeBadRequest, errHas: `duplicate field "op"`},
		{name: "duplicate op, same value", line: `{"v":1,"op":"status","op":"status"}`, code: CodeBadRequest, errHas: `duplicate field "op"`},
		{name: "duplicate op, escaped", line: `{"v":1,"op":"status","\u006fp":"upgrade"}`, code: CodeBadRequest, errHas: `duplicate field "op"`},
		{name: "duplicate v", line: `{"v":1,"op":"status","v":2}`, code: CodeBadRequest, errHas: `duplicate field "v"`},
		{name: "future version with new fields", line: `{"v":2,"op":"status","id":7}`, code: CodeBadVersion},
		{name: "op null", line: `{"v":1,"op":null}`, code: CodeBadRequest, errHas: `field "op"`},
		{name: "op a number", line: `{"v":1,"op":1}`, code: CodeBadRequest, errHas: `field "op"`},
		{name: "v null", line: `{"v":null,"op":"status"}`, code: CodeBadRequest, errHas: `field "v"`},
		{name: "v a float", line: `{"v":1.0,"op":"status"}`, code: CodeBadRequest, errHas: `field "v"`},
		{name: "v overflows", line: `{"v":99999999999999999999,"op":"status"}`, code: CodeBadRequest, errHas: `field "v"`},
		{name: "unknown field long is cut", line: `{"v":1,"op":"status","` + strings.Repeat("k", 500) + `":1}`, code: CodeBadRequest},
		{name: "empty", line: ``, code: CodeBadRequest},
		{name: "not an object", line: `["upgrade"]`, code: CodeBadRequest},
		{name: "null", line: `null`, code: CodeBadRequest},
		{name: "plain word", line: `upgrade`, code: CodeBadRequest},
		{name: "truncated", line: `{"v":1,"op":"upg`, code: CodeBadRequest, errHas: "invalid JSON"},
		{name: "trailing data", line: `{"v":1,"op":"status"} {"v":1}`, code: CodeBadRequest},
		{name: "trailing garbage", line: `{"v":1,"op":"status"}x`, code: CodeBadRequest},
		{name: "object key not a string", line: `{1:2}`, code: CodeBadRequest},
		{name: "v missing", line: `{"op":"status"}`, code: CodeBadRequest, errHas: `"v"`},
		{name: "v a string", line: `{"v":"1","op":"status"}`, code: CodeBadRequest, errHas: `field "v"`},
		{name: "v zero", line: `{"v":0,"op":"status"}`, code: CodeBadVersion},
		{name: "v two", line: `{"v":2,"op":"status"}`, code: CodeBadVersion, errHas: "version 2"},
		{name: "op missing", line: `{"v":1}`, code: CodeBadRequest, errHas: `"op"`},
		{name: "op empty", line: `{"v":1,"op":""}`, code: CodeBadRequest},
		{name: "op unknown", line: `{"v":1,"op":"reboot"}`, code: CodeUnknownOp, errHas: `"reboot"`},
		{name: "op long is cut", line: `{"v":1,"op":"` + strings.Repeat("x", 500) + `"}`, code: CodeUnknownOp},
		{name: "op wrong case", line: `{"v":1,"op":"UPGRADE"}`, code: CodeUnknownOp},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeRequest([]byte(tc.line))
			if tc.code == "" {
				if err != nil || got != tc.want {
					t.Fatalf("decodeRequest(%q) = %+v, %v; want %+v, nil", tc.line, got, err, tc.want)
				}
				return
			}
			var er *errRequest
			if !errors.As(err, &er) || er.code != tc.code {
				t.Fatalf("decodeRequest(%q) = %+v, %v; want code %s", tc.line, got, err, tc.code)
			}
			if !strings.Contains(er.msg, tc.errHas) {
				t.Errorf("decodeRequest(%q) error = %q, want it to contain %q", tc.line, er.msg, tc.errHas)
			}
			if len(er.msg) > 200 {
				t.Errorf("decodeRequest(%q) error is %d bytes long; it must not echo the input", tc.line, len(er.msg))
			}
		})
	}
}

// FuzzDecodeRequest checks that any input either decodes to a valid
// request that survives a round trip, or is refused with a short error
// carrying a code the protocol defines.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"op":"upgrade"}`,
		`{"v":1,"op":"stop"}`,
		`{"v":1,"op":"status"}`,
		`{"v":2,"op":"status"}`,
		`{"v":1,"op":"x"}`,
		`{"v":1}`,
		`{"op":"status"}`,
		`{"v":1e0,"op":"status"}`,
		`{"v":1,"op":"status","op":"stop"}`,
		`{"V":1,"OP":"status"}`,
		`{"v":-1,"op":"\u0000"}`,
		`{"v":99999999999999999999,"op":"status"}`,
		`[]`, `null`, `{`, ``, "\x00\xff", `{"v":1,"op":"status"}garbage`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := decodeRequest(line)
		if err != nil {
			var er *errRequest
			if !errors.As(err, &er) {
				t.Fatalf("decodeRequest error %v (%T) is not an *errRequest", err, err)
			}
			switch er.code {
			case CodeBadRequest, CodeBadVersion, CodeUnknownOp:
			default:
				t.Fatalf("decodeRequest code %q is not a request error", er.code)
			}
			if len(er.msg) > 200 || !utf8.ValidString(er.msg) {
				t.Fatalf("decodeRequest error message %q: too long or not UTF-8", er.msg)
			}
			return
		}
		if req.V != Version {
			t.Fatalf("decodeRequest(%q).V = %d, want %d", line, req.V, Version)
		}
		// What any JSON reader makes of an accepted line: exactly the keys
		// "v" and "op", once each, with the values decoded here.
		if keys, ok := objectKeys(line); !ok || len(keys) != 2 || keys[0] == keys[1] ||
			(keys[0] != "v" && keys[0] != "op") || (keys[1] != "v" && keys[1] != "op") {
			t.Fatalf("decodeRequest accepted %q, whose keys are %q", line, keys)
		}
		var std map[string]any
		if err := json.Unmarshal(line, &std); err != nil || std["op"] != string(req.Op) || std["v"] != float64(req.V) {
			t.Fatalf("decodeRequest(%q) = %+v, encoding/json reads %v (%v)", line, req, std, err)
		}
		switch req.Op {
		case OpUpgrade, OpStop, OpStatus:
		default:
			t.Fatalf("decodeRequest(%q).Op = %q, not a known op", line, req.Op)
		}
		again, err := decodeRequest(encodeLine(req))
		if err != nil || again != req {
			t.Fatalf("round trip of %+v = %+v, %v", req, again, err)
		}
	})
}

// objectKeys lists the keys of the JSON object in line, in order and with
// repetitions, as a stream reader meets them.
func objectKeys(line []byte) ([]string, bool) {
	dec := json.NewDecoder(bytes.NewReader(line))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		k, ok := t.(string)
		if err != nil || !ok {
			return nil, false
		}
		keys = append(keys, k)
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return nil, false
		}
	}
	return keys, true
}

func TestReplyEncoding(t *testing.T) {
	code := 3
	rep := Reply{V: 1, Code: CodeFailed, Op: OpUpgrade, Error: "x", PID: 7, Generation: 2,
		Upgrade: &UpgradeResult{PID: 7, Generation: 2, SuccessorPID: 8, Reason: "exit status 3", ExitCode: &code}}
	b := encodeLine(rep)
	if b[len(b)-1] != '\n' || strings.Count(string(b), "\n") != 1 {
		t.Fatalf("encodeLine = %q, want one line ending in a newline", b)
	}
	var got Reply
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Upgrade == nil || got.Upgrade.SuccessorPID != 8 || *got.Upgrade.ExitCode != 3 || got.Code != CodeFailed {
		t.Errorf("decoded reply = %+v, want the encoded one", got)
	}
	err := got.Err()
	var ce *Error
	if !errors.As(err, &ce) || !errors.Is(err, ErrUpgradeFailed) || ce.Upgrade == nil {
		t.Errorf("Reply.Err() = %v, want an *Error unwrapping to ErrUpgradeFailed with the result", err)
	}
}

func TestErrorUnwrap(t *testing.T) {
	tests := []struct {
		code Code
		want error
	}{
		{CodeFailed, ErrUpgradeFailed},
		{CodeInProgress, ErrInProgress},
		{CodeTooManyDraining, ErrTooManyDraining},
		{CodePermissionDenied, ErrPermissionDenied},
		{CodeNotReady, ErrUnavailable},
		{CodeStopping, ErrUnavailable},
		{CodeBusy, ErrUnavailable},
		{CodeReplaced, ErrUnavailable},
		{CodeBadRequest, ErrProtocol},
		{CodeTooLarge, ErrProtocol},
		{CodeBadVersion, ErrProtocol},
		{CodeUnknownOp, ErrProtocol},
	}
	for _, tc := range tests {
		err := (&Reply{Code: tc.code, Op: OpStatus}).Err()
		if !errors.Is(err, tc.want) {
			t.Errorf("Reply{Code: %s}.Err() = %v, want errors.Is %v", tc.code, err, tc.want)
		}
	}
	if err := (&Reply{Code: CodeOK}).Err(); err != nil {
		t.Errorf("Reply{Code: ok}.Err() = %v, want nil", err)
	}
}

func TestAuthorize(t *testing.T) {
	tests := []struct {
		name     string
		uid, gid int // the server's uid and allowed gid (-1: none)
		peer     peer
		allowed  bool
	}{
		{"same uid", 1000, -1, peer{1, 1000, 1000}, true},
		{"root", 1000, -1, peer{1, 0, 0}, true},
		{"other uid", 1000, -1, peer{1, 1001, 1000}, false},
		{"other uid, allowed gid", 1000, 50, peer{1, 1001, 50}, true},
		{"other uid, other gid", 1000, 50, peer{1, 1001, 51}, false},
		{"unknown peer", 1000, -1, peer{-1, -1, -1}, false},
		{"unknown peer, gid set", 1000, 50, peer{-1, -1, -1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{uid: tc.uid, gid: tc.gid}
			err := s.authorize(tc.peer)
			if (err == nil) != tc.allowed {
				t.Errorf("authorize(%+v) = %v, want allowed=%t", tc.peer, err, tc.allowed)
			}
		})
	}
}
