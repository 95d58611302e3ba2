//go:build unix

package handoff

import (
	"reflect"
	"testing"
	"time"
)

// TestPredecessorsMessage: PREDECESSORS reaches RecvMessage between READY
// and ACK, in order; an empty or over-long list is refused before a byte is
// written.
func TestPredecessorsMessage(t *testing.T) {
	parent, child := pipePair(t)
	ps := []Process{{PID: 100, Start: 5555, Generation: 1}, {PID: 200, Generation: 2}}
	parent.SetDeadline(time.Now().Add(10 * time.Second))
	child.SetDeadline(time.Now().Add(10 * time.Second))
	if err := parent.SendPredecessors(nil); err == nil {
		t.Errorf("SendPredecessors(nil) = nil, want an error")
	}
	if err := parent.SendPredecessors(make([]Process, MaxPredecessors+1)); err == nil {
		t.Errorf("SendPredecessors of %d = nil, want an error", MaxPredecessors+1)
	}
	if err := parent.SendPredecessors(ps); err != nil {
		t.Fatal(err)
	}
	if err := parent.SendAck(); err != nil {
		t.Fatal(err)
	}
	m, err := child.RecvMessage()
	if err != nil || m.Type != TypePredecessors || !reflect.DeepEqual(m.Predecessors, ps) {
		t.Fatalf("RecvMessage = %+v, %v; want PREDECESSORS %+v", m, err, ps)
	}
	if m, err := child.RecvMessage(); err != nil || m.Type != TypeAck {
		t.Fatalf("RecvMessage = %+v, %v; want ACK", m, err)
	}
}
