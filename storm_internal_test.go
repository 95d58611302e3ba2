//go:build unix

package molt

import (
	"os"
	"os/exec"
	"slices"
	"testing"

	"github.com/moltgo/molt/internal/handoff"
)

// exited returns the PID of a process that has exited and been reaped.
func exited(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestProcessStart(t *testing.T) {
	start, running := processStart(os.Getpid())
	if !running {
		t.Fatalf("processStart(self) says not running")
	}
	if again, _ := processStart(os.Getpid()); again != start {
		t.Errorf("processStart(self) = %d, then %d", start, again)
	}
	if _, running := processStart(exited(t)); running {
		t.Errorf("processStart of an exited, reaped process says running")
	}
	for _, pid := range []int{0, -1} {
		if _, running := processStart(pid); running {
			t.Errorf("processStart(%d) says running", pid)
		}
	}
	if !signalZero(os.Getpid()) || signalZero(exited(t)) || signalZero(0) {
		t.Errorf("signalZero: self %t, exited %t, 0 %t; want true, false, false", signalZero(os.Getpid()), signalZero(exited(t)), signalZero(0))
	}
}

// TestOlderGenerations: running keeps the processes that run with the
// start time recorded, in order, and forgets the rest for good.
func TestOlderGenerations(t *testing.T) {
	self, _ := processStart(os.Getpid())
	me := os.Getpid()
	ppid := os.Getppid()
	var o olderGenerations
	o.addParent(ppid, 4)
	o.addParent(exited(t), 4) // not our parent: ignored
	gone := handoff.Process{PID: exited(t), Generation: 1}
	o.addOlder([]handoff.Process{gone, {PID: ppid, Generation: 3}, {PID: me, Generation: 2}})
	got := o.running()
	var pids []int
	for _, p := range got {
		pids = append(pids, p.PID)
	}
	// The parent listed again with no start time is the same process;
	// this process itself is never an older generation.
	if want := []int{ppid}; !slices.Equal(pids, want) {
		t.Errorf("running = %v, want %v: the parent, once", pids, want)
	}

	var reused olderGenerations
	reused.addOlder([]handoff.Process{{PID: me, Start: self + 1, Generation: 1}})
	if len(reused.procs) != 0 {
		t.Fatalf("addOlder kept this process itself")
	}
	reused.procs = []handoff.Process{{PID: me, Start: self + 1, Generation: 1}, {PID: me, Start: self, Generation: 2}}
	got = reused.running()
	if len(got) != 1 || got[0].Generation != 2 {
		if start, _ := processStart(me); start != 0 { // start times known: the other start is another process
			t.Errorf("running = %+v, want only the record with this process's start time", got)
		}
	}
	if len(reused.procs) != len(got) {
		t.Errorf("running kept %d records, returned %d", len(reused.procs), len(got))
	}
}

// TestOlderGenerationsParentLater: the parent New named is recorded when
// it is first needed, after PREDECESSORS may have arrived, and still
// comes after the older generations; a parent that is not this process's
// parent (any more) is never recorded.
func TestOlderGenerationsParentLater(t *testing.T) {
	ppid := os.Getppid()
	var o olderGenerations
	o.parentIs(ppid, 4)
	if len(o.procs) != 0 {
		t.Fatalf("parentIs recorded %+v before anyone asked", o.procs)
	}
	// An older generation that runs: PID 1 stands in for one (unless
	// it is the parent).
	want := []int{ppid}
	if ppid != 1 {
		start, _ := processStart(1)
		o.addOlder([]handoff.Process{{PID: 1, Start: start, Generation: 2}})
		want = []int{1, ppid}
	}
	pids := func() []int {
		var pids []int
		for _, p := range o.running() {
			pids = append(pids, p.PID)
		}
		return pids
	}
	if got := pids(); !slices.Equal(got, want) {
		t.Fatalf("running = %v, want %v: the older generation, then the parent", got, want)
	}
	o.identifyParent() // once only
	if got := pids(); !slices.Equal(got, want) {
		t.Errorf("running after a second identifyParent = %v, want %v", got, want)
	}

	var notOurs olderGenerations
	notOurs.parentIs(exited(t), 4)
	notOurs.identifyParent()
	if len(notOurs.procs) != 0 {
		t.Errorf("a process that is not the parent was recorded: %+v", notOurs.procs)
	}
	var none olderGenerations // generation 1: no parent to identify
	if got := none.running(); len(got) != 0 {
		t.Errorf("running without a parent = %+v", got)
	}
}
