package molt

import (
	"testing"

	"github.com/moltgo/molt/internal/handoff"
)

// TestInheritedOrder claims inherited entries in order and out of order,
// with several under one address: each claim gets the first unclaimed
// entry with its key, in inventory order, whichever way it is found.
func TestInheritedOrder(t *testing.T) {
	keys := []string{"a", "b", "a", "c", "b", "a"}
	u := newInventory(nil)
	for i, k := range keys {
		u.inherited = append(u.inherited, &entry{kind: handoff.KindListener, network: "tcp4", key: k, fd: 100 + i})
	}
	claim := func(key string) int {
		e := u.inheritedLocked(handoff.KindListener, "tcp4", key, "")
		if e == nil {
			return -1
		}
		fd := e.fd
		e.fd = -1
		return fd
	}
	steps := []struct {
		key  string
		want int // the claimed entry's fd (100 + its place); -1 for none
	}{
		{"a", 100}, // in order
		{"a", 102}, // out of order: builds the index
		{"b", 101}, // in order again
		{"b", 104},
		{"c", 103},
		{"a", 105},
		{"a", -1},
		{"d", -1},
	}
	for i, s := range steps {
		if got := claim(s.key); got != s.want {
			t.Fatalf("claim %d (%q) got entry %d, want %d", i, s.key, got, s.want)
		}
	}
	// Another kind or network under the same address is another entry.
	udp := &entry{kind: handoff.KindPacketConn, network: "udp4", key: "a", fd: 200}
	u.inherited = append(u.inherited, udp)
	u.indexLocked(udp) // as receive does once the index exists
	if e := u.inheritedLocked(handoff.KindListener, "tcp4", "a", ""); e != nil {
		t.Errorf("a tcp4 listener at a matched %v", e.describe())
	}
	if e := u.inheritedLocked(handoff.KindPacketConn, "udp4", "a", ""); e == nil || e.fd != 200 {
		t.Errorf("the udp4 socket at a was not found")
	}
}
