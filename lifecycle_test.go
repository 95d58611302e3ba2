package molt

import (
	"testing"
)

// TestTransitionTable walks the lifecycle table: every allowed transition
// moves the state and is announced as its event, exactly once; every
// other pair of states is refused (from the wrong state) or is a bug
// (not in the table). Exit closes on entering draining or stopping, with
// the reason that state means.
func TestTransitionTable(t *testing.T) {
	states := []State{StateStarting, StateReady, StateUpgrading, StateDraining, StateStopping, StateStopped}
	for from := range states {
		for to := range states {
			pair := [2]State{states[from], states[to]}
			kind, allowed := transitions[pair]
			lc := newLifecycle(1)
			lc.state = pair[0]
			var got []Event
			lc.observe(func(e Event) { got = append(got, e) })
			if !allowed {
				func() {
					defer func() {
						if recover() == nil {
							t.Errorf("%v → %v is not in the table but did not panic", pair[0], pair[1])
						}
					}()
					lc.transition(pair[0], pair[1], Event{})
				}()
				continue
			}
			if !lc.transition(pair[0], pair[1], Event{}) {
				t.Errorf("%v → %v refused from %v", pair[0], pair[1], pair[0])
			}
			if lc.now() != pair[1] {
				t.Errorf("%v → %v left the state at %v", pair[0], pair[1], lc.now())
			}
			if len(got) != 1 || got[0].Kind != kind || got[0].From != pair[0] || got[0].To != pair[1] {
				t.Errorf("%v → %v announced %+v, want one %v", pair[0], pair[1], got, kind)
			}
			exits := pair[1] == StateDraining || pair[1] == StateStopping
			if isDone(lc.exit) != exits {
				t.Errorf("%v → %v: Exit closed = %v, want %v", pair[0], pair[1], isDone(lc.exit), exits)
			}
			want := map[State]ExitReason{StateDraining: Upgraded, StateStopping: Stopped}[pair[1]]
			if lc.exitReason() != want {
				t.Errorf("%v → %v: reason %v, want %v", pair[0], pair[1], lc.exitReason(), want)
			}
			// From any other state the same transition is refused, silently.
			for other := range states {
				if states[other] == pair[0] {
					continue
				}
				lc2 := newLifecycle(1)
				lc2.state = states[other]
				if lc2.transition(pair[0], pair[1], Event{}) || lc2.now() != states[other] {
					t.Errorf("%v → %v taken from %v", pair[0], pair[1], states[other])
				}
			}
		}
	}
	// Stopping after an upgrade keeps the reason Upgraded.
	lc := newLifecycle(1)
	for _, step := range [][2]State{{StateStarting, StateReady}, {StateReady, StateUpgrading},
		{StateUpgrading, StateDraining}, {StateDraining, StateStopping}, {StateStopping, StateStopped}} {
		if !lc.transition(step[0], step[1], Event{}) {
			t.Fatalf("%v → %v refused", step[0], step[1])
		}
	}
	if lc.exitReason() != Upgraded {
		t.Errorf("reason after upgrade then stop = %v, want upgraded", lc.exitReason())
	}
}
