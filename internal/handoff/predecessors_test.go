package handoff

import (
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"testing"
)

func TestPredecessorsRoundTrip(t *testing.T) {
	many := make([]Process, MaxPredecessors)
	for i := range many {
		many[i] = Process{PID: i + 1, Start: uint64(i) << 33, Generation: uint64(i + 1)}
	}
	for _, ps := range [][]Process{
		{{PID: 1, Generation: 1}},
		{{PID: 4242, Start: 123456789, Generation: 7}, {PID: 17, Start: 0, Generation: 8}},
		{{PID: math.MaxInt32, Start: math.MaxUint64, Generation: MaxGeneration}},
		many,
	} {
		t.Run(fmt.Sprintf("%d processes", len(ps)), func(t *testing.T) {
			got, err := UnmarshalPredecessors(MarshalPredecessors(ps))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, ps) {
				t.Fatalf("got %+v, want %+v", got, ps)
			}
		})
	}
}

func TestUnmarshalPredecessorsErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    []byte
		want string
	}{
		{"empty", nil, "truncated process count"},
		{"none", uv(0), "PREDECESSORS lists no process"},
		{"too many", uv(MaxPredecessors + 1), "PREDECESSORS lists 1025 processes, more than 1024"},
		{"more than the bytes hold", uv(2, 1, 0, 1), "PREDECESSORS of 2 processes cannot fit in 3 bytes"},
		{"no start", uv(1, 5), "cannot fit in 1 bytes"},
		{"truncated generation", append(uv(1, 5, 0), 0x80), "truncated generation"},
		{"pid 0", uv(1, 0, 0, 1), "predecessor 0 has pid 0, outside 1..2147483647"},
		{"pid beyond int32", uv(1, math.MaxInt32+1, 0, 1), "has pid 2147483648"},
		{"generation 0", uv(1, 5, 0, 0), "predecessor 0 has generation 0, outside 1..4294967296"},
		{"generation beyond the bound", uv(2, 5, 0, 1, 6, 0, MaxGeneration+1), "predecessor 1 has generation 4294967297"},
		{"overflowing start", append(uv(1, 5), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1), "start overflows 64 bits"},
		{"trailing", uv(1, 5, 0, 1, 9), "1 trailing bytes after PREDECESSORS payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := UnmarshalPredecessors(tc.p)
			checkErr(t, err, tc.want)
			if ps != nil {
				t.Errorf("got %+v with the error, want nil", ps)
			}
		})
	}
}

func TestPredecessorsFrame(t *testing.T) {
	if got := TypePredecessors.String(); got != "PREDECESSORS" {
		t.Errorf("String = %q", got)
	}
	frame := AppendFrame(nil, TypePredecessors, MarshalPredecessors([]Process{{PID: 3, Generation: 2}}))
	typ, n, err := ParseHeader([6]byte(frame[:6]))
	if err != nil || typ != TypePredecessors || n != len(frame)-6 {
		t.Errorf("ParseHeader = %v, %d, %v; want PREDECESSORS, %d", typ, n, err, len(frame)-6)
	}
	// The type after the last one defined.
	if _, _, err := ParseHeader(header(2, Version, TypeTakeover+1)); err == nil {
		t.Errorf("ParseHeader accepted type %d", TypeTakeover+1)
	}
}

func FuzzUnmarshalPredecessors(f *testing.F) {
	f.Add([]byte{})
	f.Add(MarshalPredecessors([]Process{{PID: 1234, Start: 98765, Generation: 3}}))
	f.Add(MarshalPredecessors([]Process{{PID: 1, Generation: 1}, {PID: math.MaxInt32, Start: math.MaxUint64, Generation: MaxGeneration}}))
	f.Add(binary.AppendUvarint(nil, MaxPredecessors+1))
	f.Add(uv(1, 0, 0, 0))
	f.Fuzz(func(t *testing.T, p []byte) {
		ps, err := UnmarshalPredecessors(p)
		if err != nil {
			checkDecodeErr(t, err)
			if ps != nil {
				t.Fatalf("processes returned with error")
			}
			return
		}
		if len(ps) == 0 || len(ps) > MaxPredecessors || len(ps) > len(p)/minProcessLen {
			t.Fatalf("%d processes from %d bytes", len(ps), len(p))
		}
		for _, x := range ps {
			if x.PID < 1 || int64(x.PID) > math.MaxInt32 || x.Generation < 1 || x.Generation > MaxGeneration {
				t.Fatalf("accepted out-of-range %+v", x)
			}
		}
		q := MarshalPredecessors(ps)
		if len(q) > len(p) {
			t.Fatalf("re-encoding grew from %d to %d bytes", len(p), len(q))
		}
		ps2, err := UnmarshalPredecessors(q)
		if err != nil || !reflect.DeepEqual(ps, ps2) {
			t.Fatalf("round trip: %+v, %v; want %+v", ps2, err, ps)
		}
	})
}
