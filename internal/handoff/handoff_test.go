package handoff

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// header builds a raw 6-byte header.
func header(length uint32, version uint8, t Type) [6]byte {
	var h [6]byte
	binary.BigEndian.PutUint32(h[:4], length)
	h[4], h[5] = version, byte(t)
	return h
}

// uv concatenates uvarints.
func uv(xs ...uint64) []byte {
	var p []byte
	for _, x := range xs {
		p = binary.AppendUvarint(p, x)
	}
	return p
}

// checkErr reports whether err matches want: "" means no error, otherwise
// err must wrap ErrMalformed and contain want.
func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("got error %q, want none", err)
	case want == "":
	case err == nil:
		t.Fatalf("got no error, want one containing %q", want)
	case !errors.Is(err, ErrMalformed):
		t.Fatalf("got error %q, want one wrapping ErrMalformed", err)
	case !strings.Contains(err.Error(), want):
		t.Fatalf("got error %q, want one containing %q", err, want)
	}
}

func TestAppendFrameParseHeader(t *testing.T) {
	for _, tc := range []struct {
		name    string
		t       Type
		payload []byte
	}{
		{"hello", TypeHello, Hello{Generation: 2, ParentPID: 10, Entries: 3}.Marshal()},
		{"inventory", TypeInventory, MarshalEntries([]Entry{{Kind: KindFile}})},
		{"ready", TypeReady, nil},
		{"failed", TypeFailed, MarshalReason("boom")},
		{"ack", TypeAck, nil},
		{"max payload", TypeInventory, make([]byte, MaxPayload)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := AppendFrame([]byte("prefix"), tc.t, tc.payload)
			if !bytes.HasPrefix(f, []byte("prefix")) {
				t.Fatalf("AppendFrame dropped dst")
			}
			f = f[len("prefix"):]
			if got, want := len(f), headerLen+len(tc.payload); got != want {
				t.Fatalf("frame length %d, want %d", got, want)
			}
			typ, n, err := ParseHeader([6]byte(f[:6]))
			if err != nil {
				t.Fatal(err)
			}
			if typ != tc.t || n != len(tc.payload) {
				t.Fatalf("ParseHeader = %v, %d; want %v, %d", typ, n, tc.t, len(tc.payload))
			}
			if !bytes.Equal(f[6:], tc.payload) {
				t.Fatalf("payload differs")
			}
		})
	}
}

func TestParseHeaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		hdr  [6]byte
		want string
	}{
		{"length 0", header(0, Version, TypeReady), "frame length 0 is shorter"},
		{"length 1", header(1, Version, TypeReady), "frame length 1 is shorter"},
		{"payload too big", header(5000002, Version, TypeInventory), "malformed frame: payload of 5000000 bytes exceeds 1048576"},
		{"payload one over", header(MaxPayload+3, Version, TypeInventory), "payload of 1048577 bytes exceeds"},
		{"max length", header(math.MaxUint32, Version, TypeHello), "exceeds 1048576"},
		{"type 0", header(2, Version, 0), "unknown frame type 0"},
		{"type 200", header(2, Version, 200), "unknown frame type 200"},
		{"type 255", header(2, Version, 255), "unknown frame type 255"},
		{"ready with payload", header(3, Version, TypeReady), "READY frame with a payload of 1 bytes"},
		{"ack with payload", header(12, Version, TypeAck), "ACK frame with a payload of 10 bytes"},
		{"probation with payload", header(3, Version, TypeProbation), "PROBATION frame with a payload of 1 bytes"},
		{"committed with payload", header(3, Version, TypeCommitted), "COMMITTED frame with a payload of 1 bytes"},
		{"stop with payload", header(3, Version, TypeStop), "STOP frame with a payload of 1 bytes"},
		{"takeover with payload", header(3, Version, TypeTakeover), "TAKEOVER frame with a payload of 1 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, n, err := ParseHeader(tc.hdr)
			checkErr(t, err, tc.want)
			if typ != 0 || n != 0 {
				t.Errorf("got %v, %d with the error; want zero values", typ, n)
			}
		})
	}
}

func TestParseHeaderVersion(t *testing.T) {
	for _, tc := range []struct {
		name string
		hdr  [6]byte
		got  uint8
	}{
		{"version 0", header(2, 0, TypeHello), 0},
		{"version 2", header(2, 2, TypeHello), 2},
		{"version 255", header(2, 255, TypeHello), 255},
		// The version is checked before the length and the type.
		{"version 2, bad length", header(0, 2, TypeHello), 2},
		{"version 2, bad type", header(2, 2, 99), 2},
		{"version 2, huge payload", header(math.MaxUint32, 2, TypeHello), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseHeader(tc.hdr)
			var ve *VersionError
			if !errors.As(fmt.Errorf("wrapped: %w", err), &ve) {
				t.Fatalf("got %v, want a *VersionError", err)
			}
			if ve.Got != tc.got || ve.Want != Version {
				t.Fatalf("got %+v, want Got=%d Want=%d", *ve, tc.got, Version)
			}
			if errors.Is(err, ErrMalformed) {
				t.Fatalf("a version error must not be ErrMalformed")
			}
			want := fmt.Sprintf("handoff: peer speaks protocol version %d, this process speaks 1", tc.got)
			if err.Error() != want {
				t.Fatalf("got message %q, want %q", err, want)
			}
		})
	}
}

func TestHelloRoundTrip(t *testing.T) {
	for _, h := range []Hello{
		{},
		{Generation: 1, ParentPID: 1, Entries: 0},
		{Generation: 42, ParentPID: 4242, Entries: 7},
		{Generation: MaxGeneration, ParentPID: math.MaxInt32, Entries: MaxEntries},
	} {
		t.Run(fmt.Sprintf("%+v", h), func(t *testing.T) {
			got, err := UnmarshalHello(h.Marshal())
			if err != nil {
				t.Fatal(err)
			}
			if got != h {
				t.Fatalf("got %+v, want %+v", got, h)
			}
		})
	}
}

func TestUnmarshalHelloErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    []byte
		want string
	}{
		{"empty", nil, "truncated generation"},
		{"no pid", uv(1), "truncated parent pid"},
		{"no count", uv(1, 2), "truncated entry count"},
		{"truncated varint", append(uv(1, 2), 0x80), "truncated entry count"},
		{"overflowing varint", append(uv(1, 2), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), "overflows 64 bits"},
		{"trailing", uv(1, 2, 3, 1, 4), "1 trailing bytes after HELLO payload"},
		{"unknown flag", uv(1, 2, 3, 4), "HELLO has unknown flags 0x4"},
		{"pid beyond int32", uv(1, math.MaxInt32+1, 0), "parent pid 2147483648 does not fit in 32 bits"},
		{"pid huge", uv(1, math.MaxUint64, 0), "does not fit in 32 bits"},
		{"generation beyond the bound", uv(MaxGeneration+1, 2, 0), "HELLO announces generation 4294967297, more than 4294967296"},
		{"generation that would wrap", uv(math.MaxUint64, 2, 0), "HELLO announces generation 18446744073709551615"},
		{"too many entries", uv(1, 2, MaxEntries+1), "HELLO announces 131073 entries, more than 131072"},
		{"negative entries", Hello{Entries: -1}.Marshal(), "more than 131072"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := UnmarshalHello(tc.p)
			checkErr(t, err, tc.want)
			if h != (Hello{}) {
				t.Errorf("got %+v with the error, want zero", h)
			}
		})
	}
}

func TestEntriesRoundTrip(t *testing.T) {
	many := make([]Entry, 500)
	for i := range many {
		many[i] = Entry{Kind: Kind(i%4 + 1), Network: "tcp", Addr: fmt.Sprintf("127.0.0.1:%d", i), PathDev: uint64(i), PathIno: uint64(i) << 40}
	}
	for _, tc := range []struct {
		name string
		es   []Entry
	}{
		{"none", nil},
		{"listener", []Entry{{Kind: KindListener, Network: "tcp", Addr: ":8080"}}},
		{"named file", []Entry{{Kind: KindFile, Name: "state"}}},
		{"unix socket", []Entry{{Kind: KindListener, Network: "unix", Addr: "/run/app.sock", PathDev: 64769, PathIno: 1234567}}},
		{"all kinds", []Entry{
			{Kind: KindListener, Network: "tcp6", Addr: "[::1]:443"},
			{Kind: KindPacketConn, Network: "udp", Addr: "0.0.0.0:53", Name: "dns"},
			{Kind: KindConn, Network: "unixpacket", Name: "peer"},
			{Kind: KindFile, Name: "ünïcödé ☃", PathDev: math.MaxUint64, PathIno: math.MaxUint64},
		}},
		{"many", many},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := UnmarshalEntries(MarshalEntries(tc.es))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.es) || (len(got) > 0 && !reflect.DeepEqual(got, tc.es)) {
				t.Fatalf("got %+v, want %+v", got, tc.es)
			}
		})
	}
}

func TestUnmarshalEntriesErrors(t *testing.T) {
	good := MarshalEntries([]Entry{{Kind: KindListener, Network: "tcp", Addr: ":80"}})
	// entry returns one encoded entry with the given kind and strings.
	entry := func(kind uint64, strs ...string) []byte {
		p := uv(kind)
		for _, s := range strs {
			p = append(binary.AppendUvarint(p, uint64(len(s))), s...)
		}
		return append(p, uv(0, 0)...)
	}
	for _, tc := range []struct {
		name string
		p    []byte
		want string
	}{
		{"empty", nil, "truncated entry count"},
		{"count overflows", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, "entry count overflows 64 bits"},
		{"count above MaxEntries", uv(MaxEntries + 1), "inventory of 131073 entries exceeds 131072"},
		{"count huge", uv(math.MaxUint64), "exceeds 131072"},
		{"count beyond bytes", append(uv(2), entry(1, "", "", "")...), "inventory of 2 entries cannot fit in 6 bytes"},
		{"kind 0", append(uv(1), entry(0, "", "", "")...), "entry 0 has unknown kind 0"},
		{"kind 5", append(uv(1), entry(5, "", "", "")...), "entry 0 has unknown kind 5"},
		{"kind huge", append(uv(1), entry(1<<40, "", "", "")...), "unknown kind 1099511627776"},
		{"second entry bad kind", append(append(uv(2), entry(1, "", "", "")...), entry(9, "", "", "")...), "entry 1 has unknown kind 9"},
		{"network too long", append(uv(1, 1, 200), make([]byte, 10)...), "network of 200 bytes exceeds the 10 bytes left"},
		{"addr too long", append(uv(1, 1, 0, 7, 0, 0, 0), 'x'), "addr of 7 bytes exceeds the 4 bytes left"},
		{"name length huge", append(uv(1, 1, 0, 0, math.MaxUint64), 0, 0), "name of 18446744073709551615 bytes exceeds"},
		{"truncated pathino", good[:len(good)-1], "truncated pathino"},
		{"truncated varint", append(bytes.Clone(good[:len(good)-1]), 0x80), "truncated pathino"},
		{"trailing byte", append(bytes.Clone(good), 0), "1 trailing bytes after INVENTORY payload"},
		{"zero count with trailing", uv(0, 0), "1 trailing bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es, err := UnmarshalEntries(tc.p)
			checkErr(t, err, tc.want)
			if es != nil {
				t.Errorf("got %v with the error, want nil", es)
			}
		})
	}
}

func TestReasonRoundTrip(t *testing.T) {
	long := strings.Repeat("x", 5000)
	// A 3-byte rune straddling the 4096-byte cut.
	straddle := strings.Repeat("a", maxReason-1) + "€" + "tail"
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"short", "init failed: listen tcp :80: address already in use", "init failed: listen tcp :80: address already in use"},
		{"exactly max", long[:maxReason], long[:maxReason]},
		{"truncated", long, long[:maxReason]},
		{"utf8 boundary", straddle, straddle[:maxReason-1]},
		{"invalid utf8 cut", strings.Repeat("\x80", 5000), strings.Repeat("\x80", maxReason)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := UnmarshalReason(MarshalReason(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %d bytes %.20q, want %d bytes %.20q", len(got), got, len(tc.want), tc.want)
			}
			if utf8.ValidString(tc.in) && !utf8.ValidString(got) {
				t.Fatalf("truncation broke UTF-8")
			}
		})
	}
}

func TestUnmarshalReasonErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    []byte
		want string
	}{
		{"empty", nil, "truncated reason length"},
		{"too long", append(uv(10), "abc"...), "reason of 10 bytes exceeds the 3 bytes left"},
		{"trailing", append(uv(3), "abcd"...), "1 trailing bytes after FAILED payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := UnmarshalReason(tc.p)
			checkErr(t, err, tc.want)
			if s != "" {
				t.Errorf("got %q with the error", s)
			}
		})
	}
}

func TestStrings(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{TypeHello.String(), "HELLO"},
		{TypeInventory.String(), "INVENTORY"},
		{TypeReady.String(), "READY"},
		{TypeFailed.String(), "FAILED"},
		{TypeAck.String(), "ACK"},
		{Type(0).String(), "Type(0)"},
		{Type(200).String(), "Type(200)"},
		{KindListener.String(), "listener"},
		{KindPacketConn.String(), "packet-conn"},
		{KindConn.String(), "conn"},
		{KindFile.String(), "file"},
		{Kind(9).String(), "Kind(9)"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
