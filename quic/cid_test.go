package quic

import (
	"bytes"
	"testing"
)

func testCipher(t *testing.T, b byte) *idCipher {
	t.Helper()
	c, err := newIDCipher(bytes.Repeat([]byte{b}, 16))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConnIDCarriesGeneration(t *testing.T) {
	c := testCipher(t, 1)
	for _, gen := range []uint32{1, 2, 77, 1 << 31} {
		g := &idGenerator{c: c, gen: gen}
		seen := map[string]bool{}
		for range 1000 {
			id, err := g.GenerateConnectionID()
			if err != nil {
				t.Fatal(err)
			}
			if id.Len() != ConnIDLen || g.ConnectionIDLen() != ConnIDLen {
				t.Fatalf("length %d, want %d", id.Len(), ConnIDLen)
			}
			if seen[string(id.Bytes())] {
				t.Fatalf("generation %d issued %x twice", gen, id.Bytes())
			}
			seen[string(id.Bytes())] = true
			got, ok := c.open(id.Bytes())
			if !ok || got != gen {
				t.Fatalf("open(%x) = %d, %v; want %d", id.Bytes(), got, ok, gen)
			}
		}
	}
}

// An observer sees no common part in two IDs of one generation: each byte
// position takes many values.
func TestConnIDsUncorrelated(t *testing.T) {
	g := &idGenerator{c: testCipher(t, 2), gen: 5}
	var values [ConnIDLen]map[byte]bool
	for i := range values {
		values[i] = map[byte]bool{}
	}
	for range 200 {
		id, _ := g.GenerateConnectionID()
		for i, b := range id.Bytes() {
			values[i][b] = true
		}
	}
	for i, v := range values {
		if len(v) < 100 {
			t.Errorf("byte %d took only %d values in 200 IDs", i, len(v))
		}
	}
}

// IDs the generations did not issue — a client's own choice, another
// key's, a changed byte — name no generation.
func TestConnIDForeign(t *testing.T) {
	c := testCipher(t, 3)
	other := &idGenerator{c: testCipher(t, 4), gen: 1}
	accepted := 0
	for range 10000 {
		id, _ := other.GenerateConnectionID()
		if _, ok := c.open(id.Bytes()); ok {
			accepted++
		}
	}
	if accepted > 1 { // 1 in 2^32 each
		t.Errorf("%d of 10000 IDs of another key were taken for ours", accepted)
	}
	own, _ := (&idGenerator{c: c, gen: 9}).GenerateConnectionID()
	b := own.Bytes()
	for i := range b {
		changed := bytes.Clone(b)
		changed[i] ^= 0x01
		if g, ok := c.open(changed); ok {
			t.Errorf("an ID changed at byte %d still names generation %d", i, g)
		}
	}
	for _, n := range []int{0, 8, 15, 17, 20} {
		if _, ok := c.open(make([]byte, n)); ok {
			t.Errorf("a %d-byte ID names a generation", n)
		}
	}
}

func TestDestConnID(t *testing.T) {
	id := bytes.Repeat([]byte{0xab}, ConnIDLen)
	short := append([]byte{0x40}, id...)
	short = append(short, 1, 2, 3)
	long := []byte{0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0}
	cases := []struct {
		name string
		b    []byte
		want []byte
	}{
		{"short header", short, id},
		{"long header, client's 8-byte ID", long, []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{"empty", nil, nil},
		{"short header cut", short[:ConnIDLen], nil},
		{"long header cut before the length", long[:5], nil},
		{"long header cut in the ID", long[:10], nil},
	}
	for _, c := range cases {
		if got := destConnID(c.b); !bytes.Equal(got, c.want) {
			t.Errorf("%s: %x, want %x", c.name, got, c.want)
		}
	}
}

func FuzzDestConnID(f *testing.F) {
	f.Add([]byte{0x40, 1, 2, 3})
	f.Add([]byte{0xc0, 0, 0, 0, 1, 20})
	f.Fuzz(func(t *testing.T, b []byte) {
		id := destConnID(b)
		if len(id) > 255 || (id != nil && !bytes.Contains(b, id)) {
			t.Fatalf("destConnID(%x) = %x", b, id)
		}
	})
}
