//go:build unix

package quic_test

import (
	"strings"
	"syscall"
	"testing"

	"github.com/moltgo/molt/internal/proctest"
)

// TestDrainingGenerationDies: generation 1 is SIGKILLed right after the
// hand-off, with requests under way on its connections. Its socket pair
// closes, generation 2 stops forwarding to it, and answers its
// connections' datagrams with a stateless reset (the key is shared): the
// clients learn at once, not after a timeout, and their next connections
// are served.
func TestDrainingGenerationDies(t *testing.T) {
	s := startService(t, true)
	r, endLoad := s.load()
	pid1 := s.pid
	s.upgrade()
	// before generation 1's GOAWAY (DrainHTTP3 settles first): its
	// clients are on it still
	if err := syscall.Kill(pid1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	proctest.WaitGone(t, pid1)
	r.mu.Lock()
	before := r.byGen[2]
	r.mu.Unlock()
	if !r.waitGen(2, before+200, proctest.Patience) {
		t.Fatalf("generation 2 did not serve on: %s", r)
	}
	endLoad()
	s.gen = 1 // generation 1 reports no exit
	s.stop()
	t.Logf("draining generation killed: %s", r)
	r.mu.Lock()
	defer r.mu.Unlock()
	resets := 0
	for k, n := range r.failed {
		switch {
		case strings.Contains(k, "stateless reset"):
			resets += n
		default:
			t.Errorf("%d× %s (want stateless resets only)", n, k)
		}
	}
	if resets == 0 {
		t.Error("no client got a stateless reset: none had a request under way on generation 1 when it died, or the reset never came")
	}
}
