package molt

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// The reload-storm guard ([Options.MaxDraining]) and the lingering cap
// ([Options.DrainTimeout]).
//
// The guard: a serving generation knows the older generations that may
// still run. Its parent it identifies itself, after Ready or when first
// asked (the process that started it, while getppid still names it); the
// parent's own older generations that still run, the parent lists in a
// PREDECESSORS frame before the ACK (only if there are any, so a
// successor of an earlier molt release, which knows no such frame, is
// upgraded as before while at most one generation drains). Upgrade
// counts those still running and refuses, before anything starts, when
// there are MaxDraining of them.
// "Running" guards against reused PIDs: on Linux a process counts only
// if its start time is the one recorded (procident_linux.go); elsewhere
// kill(pid, 0) decides (procident_kill.go).
//
// The cap: a generation whose Exit closed with reason Upgraded arms a
// timer of its own, and exits with DrainTimeoutExitCode when it fires.
// The timer runs in the draining process itself, so it needs no PID (and
// cannot hit a process that reused one), works whichever generations are
// still around, and follows that generation's own option.

// DefaultMaxDraining is how many older generations may still be running
// (draining) when an upgrade starts, if [Options.MaxDraining] is zero.
const DefaultMaxDraining = 2

// DrainTimeoutExitCode is the exit status of a process that molt ended
// because it was still draining [Options.DrainTimeout] after its upgrade
// (the status timeout(1) uses for a command it ended).
const DrainTimeoutExitCode = 124

// maxDraining returns the limit on older generations still running at an
// upgrade, or -1 for none.
func (o *Options) maxDraining() int {
	switch {
	case o.MaxDraining > 0:
		return o.MaxDraining
	case o.MaxDraining < 0:
		return -1
	}
	return DefaultMaxDraining
}

// olderGenerations are the generations before this one that may still
// run, oldest first.
type olderGenerations struct {
	mu    sync.Mutex
	procs []handoff.Process

	// parent records the parent generation (addParent), once, when
	// identifyParent first runs: reading its start time from /proc took
	// 0.08 ms of New, on the hand-off's path, and nothing needs it before
	// this generation's own upgrade. nil without a parent.
	parent     func()
	parentOnce sync.Once
}

// parentIs arranges for identifyParent to record the parent generation,
// pid, which started this process. It is called once, by New, before
// anything else uses o.
func (o *olderGenerations) parentIs(pid int, generation uint64) {
	o.parent = func() { o.addParent(pid, generation) }
}

// identifyParent records the parent generation parentIs named, the first
// time it is called; later calls, and calls that come while the first
// runs, return once it has. Ready calls it in the background; every
// reader of the record calls it first.
func (o *olderGenerations) identifyParent() {
	o.parentOnce.Do(func() {
		if o.parent != nil {
			o.parent()
		}
	})
}

// addParent records the parent generation, pid, if it is still this
// process's parent: the process that started this one and so, whenever
// getppid still names it, certainly the generation that sent the HELLO
// (a parent that exits re-parents this process before its PID can be
// reused). A parent that is gone already (this process was re-parented)
// is not recorded.
func (o *olderGenerations) addParent(pid int, generation uint64) {
	if pid <= 0 || generation < 1 || os.Getppid() != pid {
		return
	}
	start, running := processStart(pid)
	// Still our parent after the read: the start time read is its own,
	// not that of a process that took its PID meanwhile.
	if !running || os.Getppid() != pid {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.procs = append(o.procs, handoff.Process{PID: pid, Start: start, Generation: generation})
}

// addServing records the generation a taker takes over from: not its
// parent, so known by the PID its HELLO gave.
func (o *olderGenerations) addServing(pid int, generation uint64) {
	if pid <= 0 || generation < 1 {
		return
	}
	start, running := processStart(pid)
	if !running {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.procs = append(o.procs, handoff.Process{PID: pid, Start: start, Generation: generation})
}

// addOlder records what the parent's PREDECESSORS listed: generations
// older than the parent, so before it.
func (o *olderGenerations) addOlder(ps []handoff.Process) {
	o.mu.Lock()
	defer o.mu.Unlock()
	older := make([]handoff.Process, 0, len(ps)+len(o.procs))
	for _, p := range ps {
		if !containsProcess(o.procs, p) && !containsProcess(older, p) && p.PID != os.Getpid() {
			older = append(older, p)
		}
	}
	o.procs = append(older, o.procs...)
}

// containsProcess reports whether ps holds p: its PID with its start
// time, or with an unknown one.
func containsProcess(ps []handoff.Process, p handoff.Process) bool {
	for _, x := range ps {
		if x.PID == p.PID && (x.Start == p.Start || x.Start == 0 || p.Start == 0) {
			return true
		}
	}
	return false
}

// running returns the older generations that still run, oldest first, and
// forgets the others: a process that exited does not come back, and a
// later process with its PID is not it.
func (o *olderGenerations) running() []handoff.Process {
	o.identifyParent()
	o.mu.Lock()
	defer o.mu.Unlock()
	kept := o.procs[:0]
	for _, p := range o.procs {
		if isRunning(p) {
			kept = append(kept, p)
		}
	}
	clear(o.procs[len(kept):])
	o.procs = kept
	return append([]handoff.Process(nil), kept...)
}

// isRunning reports whether p still runs: its PID does, and, where both
// start times are known, with the start time recorded.
func isRunning(p handoff.Process) bool {
	start, running := processStart(p.PID)
	return running && (p.Start == 0 || start == 0 || start == p.Start)
}

// checkDraining refuses an upgrade while Options.MaxDraining older
// generations still run. Nothing has changed when it returns an error.
func (u *Upgrader) checkDraining() error {
	limit := u.opts.maxDraining()
	if limit < 0 {
		return nil
	}
	alive := u.older.running()
	if len(alive) < limit {
		return nil
	}
	pids := make([]int, len(alive))
	names := make([]string, len(alive))
	for i, p := range alive {
		pids[i] = p.PID
		names[i] = "pid " + strconv.Itoa(p.PID) + " (generation " + strconv.FormatUint(p.Generation, 10) + ")"
	}
	u.log.Warn("molt: upgrade refused: too many older generations still draining",
		"draining", pids, "max_draining", limit)
	return fmt.Errorf("%w: %d still running (%s), at most %d at once (Options.MaxDraining); upgrade again once one has exited",
		ErrTooManyDraining, len(alive), strings.Join(names, ", "), limit)
}

// sendPredecessors tells successor s, before the ACK, which generations
// older than this one still run, if any; the caller holds s.sendMu.
func (u *Upgrader) sendPredecessors(s *process) error {
	ps := u.older.running()
	if len(ps) == 0 {
		return nil
	}
	if len(ps) > handoff.MaxPredecessors {
		ps = ps[len(ps)-handoff.MaxPredecessors:] // the newest: the oldest are the likeliest to be gone soon
	}
	return s.conn.SendPredecessors(ps)
}

// drainingPIDs returns the PIDs of the older generations still running.
func (u *Upgrader) drainingPIDs() []int {
	ps := u.older.running()
	if len(ps) == 0 {
		return nil
	}
	pids := make([]int, len(ps))
	for i, p := range ps {
		pids[i] = p.PID
	}
	return pids
}

// drainTimeoutExit ends the process when the drain timeout passes; tests
// replace it.
var drainTimeoutExit = os.Exit

// armDrainTimeout starts the lingering cap of a generation that has just
// been upgraded (Exit closed with reason Upgraded). The timer is not the
// Upgrader's: Stop does not disarm it, since what it bounds is the
// process.
func (u *Upgrader) armDrainTimeout() {
	d := u.opts.DrainTimeout
	if d <= 0 {
		return
	}
	u.log.Info("molt: draining; the process ends when the drain timeout passes", "drain_timeout", d)
	time.AfterFunc(d, func() {
		u.log.Error("molt: still draining when the drain timeout passed; exiting",
			"drain_timeout", d, "exit_status", DrainTimeoutExitCode)
		drainTimeoutExit(DrainTimeoutExitCode)
	})
}
