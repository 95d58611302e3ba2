//go:build unix

package quic_test

import (
	"path/filepath"
	"testing"

	"github.com/moltgo/molt/internal/proctest"
)

// TestHTTP3Takeovers: each new generation is a process the test starts,
// which takes the service over through the takeover socket
// (molt.Options.TakeoverFrom) instead of being started by Upgrade. The
// connections of every older generation survive as through an upgrade.
func TestHTTP3Takeovers(t *testing.T) {
	sock := filepath.Join(proctest.ShortDir(t), "takeover")
	s := startService(t, true, envTakeover+"="+sock)
	r, endLoad := s.load()
	for range 10 {
		s.takeover()
		if !r.waitGen(s.gen, 30, proctest.Patience) {
			t.Fatalf("generation %d answered no load: %s", s.gen, r)
		}
	}
	endLoad()
	exits := s.stop()
	t.Logf("10 takeovers: %s", r)
	if f := r.failures(); f != 0 {
		t.Errorf("%d requests or dials failed", f)
	}
	if fwd, _ := sum(exits, "forwarded"); fwd == 0 {
		t.Error("no datagram was forwarded: the test did not exercise forwarding")
	}
}
