//go:build linux

package molt_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/drain"
	"github.com/moltgo/molt/internal/proctest"
)

// The reload-storm guard (Options.MaxDraining) and the lingering cap
// (Options.DrainTimeout) with real processes: every generation is the
// "storm" role, started by the test as generation 1 and by each other
// after that, all inheriting its environment.

// Environment of the "storm" role.
const (
	envStormMax       = "MOLT_STORM_MAX"           // Options.MaxDraining
	envStormTimeout   = "MOLT_STORM_DRAIN_TIMEOUT" // Options.DrainTimeout
	envStormProbation = "MOLT_STORM_PROBATION"     // Options.Probation
	// What a generation does once it drained after an upgrade: "stdin"
	// waits for one byte on its standard input (a pipe the test writes
	// to: one byte lets one draining generation go), "forever" never
	// exits.
	envStormHold = "MOLT_STORM_HOLD"
)

func init() { roles["storm"] = roleStorm }

// roleStorm serves HTTP ("pid generation body-length", as the fault
// suite's load expects), upgrades on POST /upgrade (200 "ok <successor
// pid>", 409 with the error for ErrTooManyDraining, 500 otherwise), stops
// on POST /stop, and after an upgrade drains, then holds as envStormHold
// says.
func roleStorm() int {
	pid := os.Getpid()
	opts := molt.Options{Logger: roleLogger(), ReadyTimeout: 30 * time.Second}
	opts.MaxDraining, _ = strconv.Atoi(os.Getenv(envStormMax))
	opts.DrainTimeout, _ = time.ParseDuration(os.Getenv(envStormTimeout))
	opts.Probation, _ = time.ParseDuration(os.Getenv(envStormProbation))
	u := mustNew(opts)
	ln := mustListen(u)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /upgrade", func(w http.ResponseWriter, r *http.Request) {
		err := u.Upgrade(context.Background())
		switch {
		case err == nil:
			proctest.Say("upgraded pid=%d successor=%d", pid, u.Stats().LastUpgrade.SuccessorPID)
			fmt.Fprintf(w, "ok %d", u.Stats().LastUpgrade.SuccessorPID)
		case errors.Is(err, molt.ErrTooManyDraining):
			http.Error(w, err.Error(), http.StatusConflict)
		default:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.Handle("/", faultHandler(u, nil))
	srv := drain.NewHTTPServer(&http.Server{Handler: mux})
	go srv.Serve(ln)
	if err := u.Ready(); err != nil {
		proctest.Say("ready-error pid=%d err=%q", pid, err.Error())
		return 12
	}
	proctest.Say("ready pid=%d gen=%d addr=%s", pid, u.Generation(), ln.Addr())
	<-u.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv.Drain(ctx)
	if u.Reason() == molt.Upgraded {
		proctest.Say("draining pid=%d", pid)
		switch os.Getenv(envStormHold) {
		case "stdin":
			var b [1]byte
			os.Stdin.Read(b[:]) // one byte, or the end of the pipe
		case "forever":
			select {} // until molt's drain timeout ends this process
		}
	}
	u.Stop()
	proctest.Say("exit pid=%d reason=%s", pid, u.Reason())
	return 0
}

// storm is generation 1 of the storm role, started by a test, and what
// the test knows of its generations.
type storm struct {
	ev      *proctest.Events
	cmd     *exec.Cmd
	release *os.File // the write end of every generation's standard input
	logs    *lockedBuffer
	exited  chan struct{} // generation 1 has exited; cmd.ProcessState is set then
	tg      target
	serving int   // the PID that serves
	pids    []int // every generation
}

// startStorm starts generation 1 with env and waits until it serves.
func startStorm(t *testing.T, env ...string) *storm {
	t.Helper()
	// This process's descriptors come back to what they were (pidfds
	// aside, as os/exec holds them for earlier tests' children too),
	// once every clean-up below has run.
	fds := proctest.CountFDs(t, os.Getpid(), proctest.NoPidfds)
	t.Cleanup(func() { proctest.CheckFDs(t, "after the test", os.Getpid(), proctest.NoPidfds, fds) })
	ev, w := pipe(t)
	in, release, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	logR, logW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &storm{ev: ev, release: release, logs: &lockedBuffer{}, exited: make(chan struct{})}
	copied := make(chan struct{})
	go func() { io.Copy(s.logs, logR); close(copied) }() // until every generation is gone
	s.cmd = exec.Command(os.Args[0])
	s.cmd.Env = append(os.Environ(), envRole+"=storm", envAddr+"=tcp 127.0.0.1:0")
	s.cmd.Env = append(s.cmd.Env, env...)
	// Files, not writers: Wait returns when generation 1 exits, whatever
	// its successors still hold.
	s.cmd.Stdin, s.cmd.Stdout, s.cmd.Stderr = in, w, logW
	err = s.cmd.Start()
	in.Close()
	logW.Close()
	if err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		release.Close() // every generation holding on stdin goes
		for _, pid := range s.pids {
			proctest.KillIfOurs(pid) // not os.FindProcess: it would keep a pidfd until a GC
		}
		s.cmd.Process.Kill()
		<-s.exited
		select {
		case <-copied:
		case <-time.After(time.Minute):
			t.Errorf("a generation is still running a minute after the test")
		}
		logR.Close()
		if t.Failed() {
			t.Logf("logs of the generations:\n%s", s.logs.String())
		}
	})
	r := ev.Wait(t, "ready")
	if r["pid"] != strconv.Itoa(s.cmd.Process.Pid) || r["gen"] != "1" {
		t.Fatalf("first ready event %v, want pid %d generation 1", r, s.cmd.Process.Pid)
	}
	s.serving = s.cmd.Process.Pid
	s.pids = append(s.pids, s.serving)
	s.tg = target{"tcp", r["addr"]}
	return s
}

// upgrade asks the serving generation to upgrade. It returns the
// successor's PID (0 if refused) and the refusal; any other outcome fails
// the test.
func (s *storm) upgrade(t *testing.T) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post(s.tg.url("/upgrade"), "text/plain", nil)
	if err != nil {
		t.Fatalf("POST /upgrade: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("POST /upgrade: %v", err)
	}
	body := strings.TrimSpace(string(b))
	switch resp.StatusCode {
	case http.StatusOK:
		pid, err := strconv.Atoi(strings.TrimPrefix(body, "ok "))
		if err != nil {
			t.Fatalf("POST /upgrade: %q", body)
		}
		r := s.ev.Wait(t, "ready")
		if r["pid"] != strconv.Itoa(pid) {
			t.Fatalf("the upgrade reported successor %d, the next ready event is %v", pid, r)
		}
		if d := s.ev.Wait(t, "draining"); d["pid"] != strconv.Itoa(s.serving) {
			t.Fatalf("pid %d upgraded, the next draining event is %v", s.serving, d)
		}
		s.serving = pid
		s.pids = append(s.pids, pid)
		return pid, ""
	case http.StatusConflict:
		return 0, body
	}
	t.Fatalf("POST /upgrade: %s: %s", resp.Status, body)
	return 0, ""
}

// releaseOne lets one draining generation exit and returns its PID once
// it is gone.
func (s *storm) releaseOne(t *testing.T) int {
	t.Helper()
	if _, err := s.release.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	e := s.ev.Wait(t, "exit")
	pid, _ := strconv.Atoi(e["pid"])
	if e["reason"] != "upgraded" {
		t.Fatalf("released generation exited as %v, want reason upgraded", e)
	}
	proctest.WaitGone(t, pid)
	return pid
}

// TestReloadStorm: 20 upgrade triggers, each as soon as the one before
// was answered, while the old generations do not finish draining until
// the test lets them. At most MaxDraining (2) old generations run at any
// time: the triggers beyond that are refused with ErrTooManyDraining,
// naming the generations still draining, before any successor starts. A
// generation that finishes its drain makes room for one more upgrade,
// and the generation that knows of it only through its parent's
// PREDECESSORS (a grandparent) counts it too. Clients that never retry
// are answered throughout.
func TestReloadStorm(t *testing.T) {
	s := startStorm(t, envStormMax+"=2", envStormHold+"=stdin")
	load := startFaultLoad(s.tg, 2)
	load.waitFor(t, "first answers", func(st loadStats) bool { return st.ok >= 10 })

	var old []int // the older generations still running, oldest first
	upgraded, refused := 0, 0
	check := func(i int) {
		t.Helper()
		running := 0
		for _, pid := range append(append([]int(nil), old...), s.serving) {
			if !proctest.Gone(pid) {
				running++
			}
		}
		if running != len(old)+1 || len(old) > 2 {
			t.Fatalf("after trigger %d: %d of the generations %v and %d running; want all, and at most 2 draining", i, running, old, s.serving)
		}
	}
	for i := range 20 {
		before := s.serving
		succ, refusal := s.upgrade(t)
		switch {
		case succ != 0:
			upgraded++
			old = append(old, before)
			if len(old) > 2 {
				t.Fatalf("trigger %d: an upgrade succeeded with %v still draining, at most 2 allowed", i, old[:len(old)-1])
			}
		default:
			refused++
			if len(old) < 2 {
				t.Fatalf("trigger %d refused with only %v draining: %s", i, old, refusal)
			}
			for _, pid := range old {
				if !strings.Contains(refusal, "pid "+strconv.Itoa(pid)+" (generation ") {
					t.Errorf("trigger %d: the refusal does not name draining pid %d: %s", i, pid, refusal)
				}
			}
			if !strings.Contains(refusal, "molt: too many older generations still draining: 2 still running") {
				t.Errorf("trigger %d: refusal %q", i, refusal)
			}
		}
		check(i)
		if i == 9 { // one drain finishes: room for one upgrade
			gone := s.releaseOne(t)
			old = slices.DeleteFunc(old, func(p int) bool { return p == gone })
		}
	}
	if upgraded != 3 || refused != 17 {
		t.Errorf("%d upgrades succeeded, %d were refused; want 3 and 17", upgraded, refused)
	}

	// Once every drain finished, upgrades work again.
	for len(old) > 0 {
		gone := s.releaseOne(t)
		old = slices.DeleteFunc(old, func(p int) bool { return p == gone })
	}
	for range 2 {
		before := s.serving
		if succ, refusal := s.upgrade(t); succ == 0 {
			t.Fatalf("upgrade after the drains finished refused: %s", refusal)
		}
		old = append(old, before)
	}
	since := load.snapshot()
	load.waitMore(t, since, s.serving, 5)
	st, fails := load.finish()
	if len(fails) > 0 {
		t.Errorf("%d of %d requests failed during the storm:%s", len(fails), st.sent, describeFailures(fails, 10))
	}
	t.Logf("%d requests answered by %d processes; %d upgrades, %d refused", st.ok, len(st.okByPID), upgraded+2, refused)
	if c := strings.Count(s.logs.String(), "molt: upgrade refused: too many older generations still draining"); c != refused {
		t.Errorf("%d refusals logged, want %d", c, refused)
	}
}

// TestDrainTimeout: a generation that never finishes its drain is ended
// DrainTimeout after its upgrade committed, with DrainTimeoutExitCode and
// an error in its log; the timer does not run during the probation, when
// that generation can still take the service back (the probation is far
// longer than the timeout, and the generation outlives it).
func TestDrainTimeout(t *testing.T) {
	s := startStorm(t, envStormTimeout+"=200ms", envStormProbation+"=2s", envStormHold+"=forever")
	gen1 := s.serving
	succ, refusal := s.upgrade(t) // returns when the probation passed
	if succ == 0 {
		t.Fatalf("upgrade refused: %s", refusal)
	}
	if u := s.ev.Wait(t, "upgraded"); u["pid"] != strconv.Itoa(gen1) {
		t.Fatalf("upgraded event %v, want pid %d", u, gen1)
	}
	select {
	case <-s.exited:
	case <-time.After(proctest.Patience):
		t.Fatalf("generation 1 (pid %d) still runs %v after its upgrade; DrainTimeout is 200ms", gen1, proctest.Patience)
	}
	if code := s.cmd.ProcessState.ExitCode(); code != molt.DrainTimeoutExitCode {
		t.Errorf("generation 1 ended with %v, want exit status %d", s.cmd.ProcessState, molt.DrainTimeoutExitCode)
	}
	proctest.WaitUntil(t, "the drain timeout's log line", func() bool {
		return strings.Contains(s.logs.String(), "molt: still draining when the drain timeout passed; exiting")
	})
	if body, err := httpGet(s.tg.url("/")); err != nil || !strings.HasPrefix(body, strconv.Itoa(succ)+" 2 ") {
		t.Errorf("GET after generation 1 ended = %q, %v; want generation 2 (pid %d)", body, err, succ)
	}
	// The successor stops on request: not upgraded, so no drain timeout.
	if _, err := httpPost(s.tg.url("/stop")); err != nil {
		t.Fatal(err)
	}
	if e := s.ev.Wait(t, "exit"); e["pid"] != strconv.Itoa(succ) || e["reason"] != "stopped" {
		t.Errorf("exit event %v, want pid %d stopped", e, succ)
	}
	proctest.WaitGone(t, succ)
}

// lockedBuffer collects the generations' logs for concurrent readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
