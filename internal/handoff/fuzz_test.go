package handoff

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"testing"
)

// checkDecodeErr fails unless err is an ErrMalformed.
func checkDecodeErr(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("error %v does not wrap ErrMalformed", err)
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add(AppendFrame(nil, TypeReady, nil))
	f.Add(AppendFrame(nil, TypeHello, Hello{Generation: 2, ParentPID: 99, Entries: 3}.Marshal())[:6])
	f.Add([]byte{0, 0x4c, 0x4b, 0x42, Version, byte(TypeFailed)})
	f.Add([]byte{0, 0, 0, 2, 2, byte(TypeHello)})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, Version, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var hdr [6]byte
		copy(hdr[:], b)
		typ, n, err := ParseHeader(hdr)
		if err != nil {
			var ve *VersionError
			if hdr[4] != Version {
				if !errors.As(err, &ve) || ve.Got != hdr[4] || ve.Want != Version {
					t.Fatalf("version %d: got %v, want a *VersionError", hdr[4], err)
				}
				return
			}
			checkDecodeErr(t, err)
			return
		}
		if !typ.valid() || n < 0 || n > MaxPayload {
			t.Fatalf("accepted type %v, payload %d", typ, n)
		}
		if (typ == TypeReady || typ == TypeAck) && n != 0 {
			t.Fatalf("accepted %v with payload %d", typ, n)
		}
		if got := AppendFrame(nil, typ, make([]byte, n))[:6]; !bytes.Equal(got, hdr[:]) {
			t.Fatalf("AppendFrame gives header %x, want %x", got, hdr)
		}
	})
}

func FuzzUnmarshalEntries(f *testing.F) {
	f.Add([]byte{})
	f.Add(MarshalEntries(nil))
	f.Add(MarshalEntries([]Entry{{Kind: KindListener, Network: "tcp", Addr: "127.0.0.1:8080"}}))
	f.Add(MarshalEntries([]Entry{
		{Kind: KindPacketConn, Network: "udp", Addr: ":53", Name: "dns"},
		{Kind: KindFile, Name: "state", PathDev: 1 << 60, PathIno: 12345},
	}))
	f.Add(binary.AppendUvarint(nil, MaxEntries))
	f.Fuzz(func(t *testing.T, p []byte) {
		es, err := UnmarshalEntries(p)
		if err != nil {
			checkDecodeErr(t, err)
			if es != nil {
				t.Fatalf("entries returned with error")
			}
			return
		}
		if len(es) > len(p)/minEntryLen {
			t.Fatalf("%d entries from %d bytes", len(es), len(p))
		}
		q := MarshalEntries(es)
		if len(q) > len(p) {
			t.Fatalf("re-encoding grew from %d to %d bytes", len(p), len(q))
		}
		es2, err := UnmarshalEntries(q)
		if err != nil {
			t.Fatalf("re-encoded entries do not decode: %v", err)
		}
		if len(es) != len(es2) || (len(es) > 0 && !reflect.DeepEqual(es, es2)) {
			t.Fatalf("round trip changed entries: %+v != %+v", es, es2)
		}
	})
}

func FuzzUnmarshalHello(f *testing.F) {
	f.Add([]byte{})
	f.Add(Hello{Generation: 2, ParentPID: 1234, Entries: 5}.Marshal())
	f.Add(Hello{Generation: 1 << 63, ParentPID: 1<<31 - 1, Entries: MaxEntries}.Marshal())
	f.Add(binary.AppendUvarint(binary.AppendUvarint([]byte{1}, 1<<31), MaxEntries+1))
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := UnmarshalHello(p)
		if err != nil {
			checkDecodeErr(t, err)
			if h != (Hello{}) {
				t.Fatalf("non-zero Hello with error")
			}
			return
		}
		if h.ParentPID < 0 || int64(h.ParentPID) > math.MaxInt32 || h.Entries < 0 || h.Entries > MaxEntries {
			t.Fatalf("accepted out-of-range %+v", h)
		}
		h2, err := UnmarshalHello(h.Marshal())
		if err != nil || h2 != h {
			t.Fatalf("round trip: %+v, %v; want %+v", h2, err, h)
		}
	})
}

func FuzzUnmarshalReason(f *testing.F) {
	f.Add([]byte{})
	f.Add(MarshalReason("init failed"))
	f.Add(MarshalReason(string(make([]byte, 5000))))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, p []byte) {
		s, err := UnmarshalReason(p)
		if err != nil {
			checkDecodeErr(t, err)
			return
		}
		s2, err := UnmarshalReason(MarshalReason(s))
		switch {
		case err != nil:
			t.Fatalf("re-encoded reason does not decode: %v", err)
		case len(s) <= maxReason && s2 != s:
			t.Fatalf("round trip changed a %d-byte reason", len(s))
		case len(s) > maxReason && (len(s2) > maxReason || len(s2) < maxReason-3 || s[:len(s2)] != s2):
			t.Fatalf("a %d-byte reason was cut to %d bytes, want a prefix of %d..%d", len(s), len(s2), maxReason-3, maxReason)
		}
	})
}
