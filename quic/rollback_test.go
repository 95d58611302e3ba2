//go:build unix

package quic_test

import (
	"strings"
	"testing"

	"github.com/moltgo/molt/internal/proctest"
)

// TestHTTP3Rollback: generation 1 has its successor on probation; the
// successor dies 300 ms after its Ready, under load. Generation 1 reads
// the shared socket again: its own connections, whose datagrams the
// successor forwarded meanwhile, go on without a failure, and new
// connections reach it. What the successor had accepted is lost with it,
// as with TCP.
func TestHTTP3Rollback(t *testing.T) {
	s := startService(t, true, envProb+"=1m", envCrash+"=2")
	r, endLoad := s.load()
	pid1 := s.pid
	s.upgrade() // generation 2 is ready, and dies soon
	failed := s.ev.Wait(t, "upgrade-failed")
	if !strings.Contains(failed["err"], "rolled back") {
		t.Fatalf("the upgrade failed with %q, want a rollback", failed["err"])
	}
	s.gen, s.pid = 1, pid1
	r.mu.Lock()
	before := r.byGen[1]
	r.mu.Unlock()
	if !r.waitGen(1, before+200, proctest.Patience) {
		t.Fatalf("generation 1 did not serve again after the rollback: %s", r)
	}
	endLoad()
	exits := s.stop()
	// generation 1's connections lived through the probation on what the
	// successor forwarded
	if from, _ := sum(exits, "from_successor"); from == 0 {
		t.Error("generation 1 received nothing from its successor during the probation")
	}
	t.Logf("rollback under load: %s", r)
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, n := range r.failed {
		if strings.Contains(k, "connection to generation 1:") {
			t.Errorf("%d× %s", n, k)
		}
	}
	for k, n := range r.dialFail {
		t.Logf("dial failures (connections to the successor that died): %d× %s", n, k)
	}
}
