package proctest

import (
	"testing"
	"time"
)

// Patience bounds every wait of this package for something that happens
// by itself, outside the test's control: a process exiting, an event line
// arriving, a descriptor being closed by a goroutine that is winding down.
// It is long because the tests run on loaded 2-core machines under -race;
// a wait that passes never waits that long, and one that fails means a
// bug, not a slow machine.
const Patience = 2 * time.Minute

// Until polls cond until it holds or timeout has passed, and reports
// whether it held. cond is called at once, then every millisecond, and
// less often (up to every 20 ms) as time goes on.
//
// Until is for conditions outside the test's reach (a process's state, a
// kernel queue, a file), which nothing can signal. It must not stand in
// for synchronisation with the test's own goroutines: give those a
// channel.
func Until(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for {
		if cond() {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
}

// WaitUntil waits up to Patience until cond holds, and fails the test
// (t.Fatalf), saying what it waited for, if it never does.
func WaitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !Until(Patience, cond) {
		t.Fatalf("%s: not within %v", what, Patience)
	}
}
