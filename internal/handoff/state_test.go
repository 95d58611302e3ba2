package handoff

import (
	"bytes"
	"strings"
	"testing"
)

func TestStateHeaderRoundTrip(t *testing.T) {
	for _, h := range []StateHeader{
		{},
		{Size: 1, Version: "v1"},
		{Size: MaxState, Version: strings.Repeat("v", MaxStateVersion)},
	} {
		got, err := UnmarshalStateHeader(h.Marshal())
		if err != nil || got != h {
			t.Errorf("round trip of %+v: %+v, %v", h, got, err)
		}
	}
}

func TestUnmarshalStateHeaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    []byte
		want string
	}{
		{"empty", nil, "truncated state size"},
		{"no version", uv(3), "truncated state version length"},
		{"short version", append(uv(3, 5), "v1"...), "state version of 5 bytes exceeds the 2 bytes left"},
		{"trailing", append(uv(3, 2), "v1!"...), "1 trailing bytes after STATE payload"},
		{"too large", StateHeader{Size: MaxState + 1}.Marshal(), "STATE announces 67108865 bytes, more than 67108864"},
		{"negative", StateHeader{Size: -1}.Marshal(), "more than 67108864"},
		{"version too long", StateHeader{Version: strings.Repeat("v", MaxStateVersion+1)}.Marshal(), "STATE version of 257 bytes, more than 256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := UnmarshalStateHeader(tc.p)
			checkErr(t, err, tc.want)
			if h != (StateHeader{}) {
				t.Errorf("got %+v with the error, want zero", h)
			}
		})
	}
}

func TestHelloState(t *testing.T) {
	h := Hello{Generation: 2, ParentPID: 7, Entries: 1, State: true}
	p := h.Marshal()
	if got, err := UnmarshalHello(p); err != nil || got != h {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, h)
	}
	// Without the flag the payload is what a HELLO always was: a parent
	// that sends no state speaks to successors that know no flags.
	if got, want := (Hello{Generation: 2, ParentPID: 7, Entries: 1}).Marshal(), uv(2, 7, 1); !bytes.Equal(got, want) {
		t.Errorf("HELLO without state = %x, want %x", got, want)
	}
	if got, err := UnmarshalHello(uv(2, 7, 1, 0)); err != nil || got.State {
		t.Errorf("explicit zero flags: %+v, %v", got, err)
	}
	_, err := UnmarshalHello(uv(2, 7, 1, 3))
	checkErr(t, err, "HELLO has unknown flags 0x2")
}

func TestStateFrameType(t *testing.T) {
	if TypeState != 10 || TypeState.String() != "STATE" || !TypeState.valid() || TypeState.empty() {
		t.Fatalf("TypeState = %d %q valid=%t empty=%t", TypeState, TypeState, TypeState.valid(), TypeState.empty())
	}
	typ, n, err := ParseHeader([6]byte(AppendFrame(nil, TypeState, make([]byte, 9))))
	if err != nil || typ != TypeState || n != 9 {
		t.Fatalf("ParseHeader(STATE) = %v, %d, %v", typ, n, err)
	}
	_, _, err = ParseHeader(header(2, Version, TypeTakeover+1))
	checkErr(t, err, "unknown frame type 13")
}

func FuzzUnmarshalStateHeader(f *testing.F) {
	f.Add([]byte{})
	f.Add(StateHeader{Size: 3, Version: "v1"}.Marshal())
	f.Add(StateHeader{Size: MaxState, Version: strings.Repeat("x", MaxStateVersion)}.Marshal())
	f.Add(StateHeader{Size: MaxState + 1}.Marshal())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := UnmarshalStateHeader(p)
		if err != nil {
			checkDecodeErr(t, err)
			if h != (StateHeader{}) {
				t.Fatalf("non-zero StateHeader with error")
			}
			return
		}
		if h.Size < 0 || h.Size > MaxState || len(h.Version) > MaxStateVersion {
			t.Fatalf("accepted out-of-range %+v", h)
		}
		h2, err := UnmarshalStateHeader(h.Marshal())
		if err != nil || h2 != h {
			t.Fatalf("round trip: %+v, %v; want %+v", h2, err, h)
		}
	})
}
