//go:build linux

package molt_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/proctest"
)

// The probation's paths that the fault suite (faults_cases_test.go) does
// not run under load: a successor that stops on purpose, and one that
// tries to upgrade while its parent can still take the service back.

// startProbation creates generation 1 in the test process with a
// probation, serving HTTP on loopback, its successors playing the fault
// role with env.
func startProbation(t testing.TB, probation time.Duration, env ...string) (*molt.Upgrader, *proctest.Events) {
	t.Helper()
	ev, w := pipe(t)
	u, err := molt.New(molt.Options{
		Logger:       roleLogger(),
		ReadyTimeout: 30 * time.Second,
		Probation:    probation,
		Command:      roleCommand("fault", "tcp 127.0.0.1:0", w, nil, env...),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		u.Stop()
		t.Fatal(err)
	}
	srv := &http.Server{Handler: faultHandler(u, nil)}
	served := make(chan struct{})
	go func() { srv.Serve(ln); close(served) }()
	t.Cleanup(func() {
		u.Stop()
		srv.Close()
		<-served
	})
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	return u, ev
}

// TestProbationSuccessorStops: a successor on probation cannot upgrade
// (its parent's upgrade still runs), and when it stops on purpose its
// parent does not take the service back: the upgrade succeeds at once,
// without waiting out the probation, and the parent drains.
func TestProbationSuccessorStops(t *testing.T) {
	const probation = 10 * time.Minute // the test would time out first
	fds := proctest.CountFDs(t, os.Getpid(), proctest.NoPidfds)
	u, ev := startProbation(t, probation, envFault+"=stop-in-probation")
	if err := u.Upgrade(context.Background()); err != nil {
		t.Fatalf("Upgrade = %v, want nil: the successor stopped on purpose", err)
	}
	if u.Reason() != molt.Upgraded {
		t.Errorf("Reason = %v, want upgraded", u.Reason())
	}
	r := ev.Wait(t, "upgrade-refused")
	if r["in-progress"] != "true" || !strings.Contains(r["err"], "has this one on probation") {
		t.Errorf("the successor's Upgrade during its probation = %q, want ErrUpgradeInProgress naming the probation", r["err"])
	}
	pid, _ := strconv.Atoi(ev.Wait(t, "stopped")["pid"])
	proctest.WaitGone(t, pid)
	u.Stop()
	proctest.CheckFDs(t, "after Stop", os.Getpid(), proctest.NoPidfds, fds+2) // + the events pipe
}

// TestRollBackWithoutProbation: generation 1 has no parent to take the
// service back.
func TestRollBackWithoutProbation(t *testing.T) {
	u, err := molt.New(molt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Stop()
	if err := u.RollBack(errors.New("unhealthy")); !errors.Is(err, molt.ErrNoProbation) {
		t.Errorf("RollBack in generation 1 = %v, want ErrNoProbation", err)
	}
}

// BenchmarkRollback measures a rollback: from the successor's exit (its
// own clock, 200 ms after its Ready) to the moment generation 1 accepts
// again; reported as the median and the maximum over b.N rollbacks (run
// with -benchtime=20x).
func BenchmarkRollback(b *testing.B) {
	var resumed time.Time
	molt.SetTestHookResumed(func() { resumed = time.Now() })
	defer molt.SetTestHookResumed(nil)
	u, ev := startProbation(b, time.Minute, envFault+"=exit-in-probation", envFaultAfter+"=200ms")
	var took []time.Duration
	for b.Loop() {
		err := u.Upgrade(context.Background())
		if !errors.Is(err, molt.ErrRolledBack) {
			b.Fatalf("Upgrade = %v, want a rollback", err)
		}
		at, _ := strconv.ParseInt(ev.Wait(b, "exiting")["at"], 10, 64)
		took = append(took, resumed.Sub(time.Unix(0, at)))
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(took[len(took)-1].Nanoseconds()), "max-ns")
	b.ReportMetric(0, "ns/op")
}
