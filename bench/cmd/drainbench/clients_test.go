package main

import (
	"context"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moltgo/molt/internal/reap"
)

// TestMain lets the test binary play the server: the driver starts
// generation 1 as os.Executable with DRAINBENCH_ROLE=server, and molt
// passes the environment on to every successor.
func TestMain(m *testing.M) {
	if os.Getenv(envRole) == "server" {
		os.Exit(runServer())
	}
	os.Exit(m.Run())
}

// TestCountingKinds runs the counting HTTP/2 kinds (h2c and TLS) against
// a molt drainbench server chain through three upgrades: every stream
// sent is answered, none fails or is aborted, no dial fails, and the
// clients saw the drains' GOAWAYs.
func TestCountingKinds(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("molt needs Unix descriptor passing")
	}
	r, err := reap.New()
	if err != nil {
		t.Fatal(err)
	}
	st, err := newServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	molt, _ := systemNamed("molt")
	cfg := config{
		systems:  []system{molt},
		kinds:    []string{"h2raw", "h2tls"},
		upgrades: 3,
		clients:  8,
		interval: 300 * time.Millisecond,
		steady:   time.Second,
		duration: time.Minute,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lr := runLoad(ctx, cfg, r, molt, st)

	for _, p := range append(lr.problems, lr.end.problems...) {
		t.Errorf("problem: %s", p)
	}
	if !lr.ran(cfg.upgrades) {
		for _, u := range lr.upgrades {
			t.Logf("upgrade %d: handoff %v, err %q", u.n, u.handoff, u.err)
		}
		t.Fatalf("the load phase did not run as planned (%d upgrades of %d)", len(lr.upgrades), cfg.upgrades)
	}
	if len(lr.kinds) != 2 {
		t.Fatalf("%d kinds, want h2raw and h2tls", len(lr.kinds))
	}
	for i, k := range lr.kinds {
		c, f := k.counts, lr.figures(i)
		t.Logf("%s: %v", k.id, c)
		switch {
		case !k.counting:
			t.Errorf("%s is not a counting kind", k.id)
		case c.Answered == 0 || c.Failed() != 0 || c.Aborted() != 0 || c.DialErrors() != 0 || !c.Balanced():
			t.Errorf("%s: want every stream answered and no dial error; first of each cause: %q", k.id, c.First)
		case f.failed != 0 || f.requests != c.Answered:
			t.Errorf("%s: the recorder saw %d requests, %d failed; the client %v", k.id, f.requests, f.failed, c)
		case c.GoAways == 0:
			t.Errorf("%s: no GOAWAY read through %d upgrades", k.id, cfg.upgrades)
		}
	}
	rep := report{cfg: cfg, loads: []*loadResult{lr}}
	if !rep.passed() {
		t.Error("the report does not pass")
	}
	md := rep.markdown()
	for _, want := range []string{"HTTP/2 (h2c) GET, counting", "HTTP/2 (TLS) GET, counting", "0 failed (none)"} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}
