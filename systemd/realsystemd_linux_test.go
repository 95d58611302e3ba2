package systemd_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRealSystemd runs the service role under a real systemd (>= 253) as
// PID 1 of new namespaces, with loopback load, and checks what systemd and
// the clients see: reloads (ExecReload=molt upgrade) that wait for the new
// generation and move MainPID, failed upgrades that fail `systemctl
// reload` and leave the old generation serving, socket activation with
// named sockets across reloads, the file descriptor store across a kill -9
// and a restart, a graceful stop, a stop bounded by TimeoutStopSec= and
// one extended on purpose, and the notify-reload and PID file variants.
//
// Opt in with MOLT_SYSTEMD_TEST=1 (root); .ci/systemd.sh does.
func TestRealSystemd(t *testing.T) {
	role := useRole(t, "service")
	systemdPath := requireSystemd(t)

	// /tmp must survive: the recipe never runs tmpfiles, and this checks it.
	sentinel := filepath.Join(t.TempDir(), "sentinel")
	if err := os.WriteFile(sentinel, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(sentinel); err != nil {
			t.Errorf("/tmp did not survive the systemd namespace: %v", err)
		}
	})

	// Work outside /tmp: the binary, the units, the services' files.
	work, err := os.MkdirTemp("/var/tmp", "molt-systemd-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(work)
		} else {
			t.Logf("left %s for inspection", work)
		}
	})
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(work, "molt-systemd.test")
	copyFile(t, self, bin)
	moltCLI := buildMolt(t, work)

	ports := freePorts(t, 11)
	units := filepath.Join(work, "units")
	dirs := map[string]string{}
	for _, name := range []string{"reload", "sock", "store", "nreload", "pidfile", "bound", "term", "extend", "probation", "blue"} {
		dirs[name] = filepath.Join(work, name)
		if err := os.MkdirAll(dirs[name], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(units, 0o755); err != nil {
		t.Fatal(err)
	}
	writeUnit := func(name, text string) {
		if err := os.WriteFile(filepath.Join(units, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The service units are the repository's examples (examples/systemd),
	// running the service role instead of the example binary and the molt
	// command built from cmd/molt.
	fromExample := func(example, dir string, env ...string) string {
		return exampleUnit(t, example, bin, moltCLI, append([]string{role, envDir + "=" + dir, "GORACE=atexit_sleep_ms=0"}, env...))
	}
	listen := func(port int) string { return fmt.Sprintf("%s=http=tcp:127.0.0.1:%d", envListen, port) }
	writeUnit("molt-reload.service", fromExample("molt-example.service", dirs["reload"], listen(ports[0]))+"WatchdogSec=3\n")
	writeUnit("molt-web.socket", fmt.Sprintf("[Socket]\nListenStream=127.0.0.1:%d\nFileDescriptorName=web\nService=molt-sock.service\n", ports[1]))
	writeUnit("molt-admin.socket", fmt.Sprintf("[Socket]\nListenStream=127.0.0.1:%d\nFileDescriptorName=admin\nService=molt-sock.service\n", ports[2]))
	writeUnit("molt-sock.service", strings.ReplaceAll(fromExample("molt-example-socket.service", dirs["sock"], envSockets+"=web,admin"),
		"molt-example-web.socket", "molt-web.socket molt-admin.socket"))
	writeUnit("molt-store.service", fromExample("molt-example-fdstore.service", dirs["store"], listen(ports[3]), envFDStore+"=1"))
	// Type=notify-reload instead of ExecReload= (systemd >= 253): SIGHUP,
	// and a reload that cannot fail.
	nreload := fromExample("molt-example.service", dirs["nreload"], listen(ports[4]))
	nreload = regexp.MustCompile(`(?m)^ExecReload=.*\n`).ReplaceAllString(nreload, "")
	nreload = strings.Replace(nreload, "\nType=notify\n", "\nType=notify-reload\nReloadSignal=SIGHUP\n", 1)
	writeUnit("molt-nreload.service", nreload)
	// No notifications at all but a PID file.
	writeUnit("molt-pidfile.service", fromExample("molt-example-pidfile.service", dirs["pidfile"], listen(ports[5]), envPIDFile+"=/run/molt-example.pid"))
	// Stops: bounded by TimeoutStopSec= (the example's settings, a shorter
	// timeout), the same without TimeoutStopFailureMode=kill, and extended
	// on purpose (Options.ExtendStopTimeout).
	writeUnit("molt-bound.service", fromExample("molt-example.service", dirs["bound"], listen(ports[6]))+
		fmt.Sprintf("TimeoutStopSec=%d\n", int(boundStop.Seconds())))
	writeUnit("molt-term.service", regexp.MustCompile(`(?m)^TimeoutStopFailureMode=.*\n`).ReplaceAllString(
		fromExample("molt-example.service", dirs["term"], listen(ports[7])), "")+fmt.Sprintf("TimeoutStopSec=%d\n", int(termStop.Seconds())))
	writeUnit("molt-extend.service", fromExample("molt-example.service", dirs["extend"], listen(ports[8]), envExtend+"=1")+
		fmt.Sprintf("TimeoutStopSec=%d\n", int(extendStop.Seconds())))

	// A probation of 3 s: a successor that dies in it is rolled back.
	writeUnit("molt-probation.service", fromExample("molt-example.service", dirs["probation"], listen(ports[9]), envProbation+"=3s"))

	// Blue/green: two instances of the example template on one port, each
	// taking over from the other through one takeover socket (the
	// example's MOLT_EXAMPLE_ lines are replaced by the role's, so it is
	// named again here).
	writeUnit("molt-bg@.service", fromExample("molt-example-bluegreen@.service", dirs["blue"], listen(ports[10]),
		envTakeover+"=/run/molt-example-takeover.sock"))

	sd := bootSystemd(t, systemdPath, units, filepath.Join(work, "boot.log"))
	url := func(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }

	t.Run("reload", func(t *testing.T) {
		sd := sd.in(t)
		t.Cleanup(sd.dumpOnFailure)
		const unit = "molt-reload.service"
		ev := serviceEvents{filepath.Join(dirs["reload"], "events")}
		sd.ctl("start", unit)
		logShow(t, sd, unit, "after start")
		ld := startLoad([]string{url(ports[0])}, 3, 2)
		var took []time.Duration
		pids := []int{sd.mainPID(unit)}
		for i := range 20 {
			prev := pids[len(pids)-1]
			start := time.Now()
			sd.ctl("reload", unit)
			took = append(took, time.Since(start))
			p := sd.show(unit, "MainPID", "ActiveState", "SubState")
			pid, _ := strconv.Atoi(p["MainPID"])
			if pid == prev || pid == 0 {
				t.Errorf("reload %d: MainPID %d, was %d: want a new one", i+1, pid, prev)
			}
			if p["ActiveState"] != "active" || p["SubState"] != "running" {
				t.Errorf("reload %d: %s/%s, want active/running", i+1, p["ActiveState"], p["SubState"])
			}
			// "serving" is written before Ready: systemctl reload must not
			// have returned before it.
			if len(ev.find("serving", fmt.Sprintf("pid=%d", pid), fmt.Sprintf("gen=%d", i+2))) != 1 {
				t.Errorf("reload %d returned, but MainPID %d has not reported serving as generation %d", i+1, pid, i+2)
			}
			pids = append(pids, pid)
		}
		// Every old generation drains and exits; the last one serves.
		waitFor(t, "20 old generations to exit", 60*time.Second, func() bool { return len(ev.find("exit")) >= 20 })
		time.Sleep(200 * time.Millisecond) // a little load on the last generation alone
		st := ld.finish()
		t.Logf("20 reloads under load: %v", st)
		t.Logf("reload duration (systemctl reload via nsenter): %s", durations(took))
		t.Logf("MainPIDs: %v", pids)
		if st.Failed != 0 || st.Refused != 0 || st.OK == 0 {
			t.Errorf("load: %v; errors: %q", st, st.Errors)
		}
		for _, line := range ev.find("exit") {
			if !strings.Contains(line, `reason="upgraded"`) || !strings.Contains(line, `drain_err=""`) {
				t.Errorf("old generation: %s", line)
			}
		}
		last := pids[len(pids)-1]
		waitFor(t, "a watchdog ping from the last generation", 10*time.Second, func() bool {
			return strings.Contains(sd.journal(""), fmt.Sprintf("Got notification message from PID %d (WATCHDOG=1)", last))
		})
		p := logShow(t, sd, unit, "after 20 reloads")
		if p["NRestarts"] != "0" || p["Result"] != "success" {
			t.Errorf("NRestarts=%s Result=%s, want 0 and success (watchdog and MAINPID hand-over kept it alive)", p["NRestarts"], p["Result"])
		}
	})

	// ExecReload=molt upgrade: a failed upgrade fails `systemctl reload`
	// (the unit stays active on the old MainPID), a good one succeeds.
	t.Run("reload-results", func(t *testing.T) {
		sd := sd.in(t)
		t.Cleanup(sd.dumpOnFailure)
		const unit = "molt-reload.service"
		ev := serviceEvents{filepath.Join(dirs["reload"], "events")}
		marker := filepath.Join(dirs["reload"], failInitFile)
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		ld := startLoad([]string{url(ports[0])}, 3, 2)
		before := sd.mainPID(unit)
		took := reloads(t, sd, unit, "failed", func(i, code int, p map[string]string) {
			if code == 0 {
				t.Errorf("failed reload %d: systemctl reload exit code 0, want non-zero", i+1)
			}
			if p["ReloadResult"] != "exit-code" || p["Result"] != "success" {
				t.Errorf("failed reload %d: ReloadResult=%s Result=%s, want exit-code and success", i+1, p["ReloadResult"], p["Result"])
			}
			if pid, _ := strconv.Atoi(p["MainPID"]); pid != before {
				t.Errorf("failed reload %d: MainPID %d, want %d (the old generation)", i+1, pid, before)
			}
			if p["ActiveState"] != "active" || p["SubState"] != "running" {
				t.Errorf("failed reload %d: %s/%s, want active/running", i+1, p["ActiveState"], p["SubState"])
			}
			if !strings.Contains(p["StatusText"], "upgrade failed") || !strings.Contains(p["StatusText"], "failed during init") {
				t.Errorf("failed reload %d: StatusText %q, want the failure and its reason", i+1, p["StatusText"])
			}
		})
		t.Logf("10 failed reloads: %s", durations(took))
		status, _ := sd.run("systemctl", "status", "--no-pager", "-n", "0", unit)
		t.Logf("systemctl status after the failed reloads:\n%s", status)
		if !strings.Contains(status, "Status: \"upgrade failed") {
			t.Errorf("systemctl status does not show the failed upgrade")
		}
		if n := strings.Count(sd.journal(unit), "init failed: simulated configuration error"); n < 10 {
			t.Errorf("journal of %s has the successor's reason %d times, want 10", unit, n)
		}
		// What molt upgrade (ExecReload=) printed: the reason, and that
		// the old generation serves on. Asked for by its identifier: a
		// control process may have exited before journald read its
		// output, and then journald cannot tell its unit (-u misses it).
		var cli []string
		waitFor(t, "molt upgrade's output in the journal", 30*time.Second, func() bool {
			sd.run("journalctl", "--sync")
			cli = cli[:0]
			for _, line := range strings.Split(sd.must("journalctl", "--no-pager", "-o", "cat", "-t", "molt"), "\n") {
				if strings.HasPrefix(line, "molt: ") {
					cli = append(cli, line)
				}
			}
			return strings.Count(strings.Join(cli, "\n"), "goes on serving") >= 10
		})
		t.Logf("journal, molt upgrade in ExecReload= (the first failure):\n%s", strings.Join(cli[:min(2, len(cli))], "\n"))
		inUnit := 0
		for _, line := range strings.Split(sd.journal(unit), "\n") {
			if strings.HasPrefix(line, "molt: ") {
				inUnit++
			}
		}
		t.Logf("of molt upgrade's %d lines, journalctl -u %s shows %d", len(cli), unit, inUnit)
		os.Remove(marker)

		prev := before
		took = reloads(t, sd, unit, "good", func(i, code int, p map[string]string) {
			pid, _ := strconv.Atoi(p["MainPID"])
			if code != 0 || p["ReloadResult"] != "success" {
				t.Errorf("good reload %d: exit code %d, ReloadResult=%s; want 0 and success", i+1, code, p["ReloadResult"])
			}
			if pid == prev || pid == 0 || p["ActiveState"] != "active" || p["SubState"] != "running" {
				t.Errorf("good reload %d: MainPID %d (was %d), %s/%s; want a new one, active/running", i+1, pid, prev, p["ActiveState"], p["SubState"])
			}
			if len(ev.find("serving", fmt.Sprintf("pid=%d", pid))) != 1 {
				t.Errorf("good reload %d returned, but MainPID %d has not reported serving", i+1, pid)
			}
			prev = pid
		})
		t.Logf("10 good reloads: %s", durations(took))
		waitFor(t, "the old generations to exit", 60*time.Second, func() bool {
			return len(ev.find("exit", fmt.Sprintf("pid=%d", before))) == 1 && len(ev.find("exit")) >= 30
		})
		st := ld.finish()
		t.Logf("10 failed and 10 good reloads under load: %v", st)
		if st.Failed != 0 || st.Refused != 0 || st.OK == 0 {
			t.Errorf("load: %v; errors: %q", st, st.Errors)
		}
	})

	// Options.Probation: a successor that crashes 200 ms after Ready is
	// rolled back: systemctl reload fails, MainPID never moved, the unit
	// stays active, StatusText names the rollback, and no request fails;
	// a successor that survives the probation becomes MainPID.
	t.Run("probation-rollback", func(t *testing.T) {
		sd := sd.in(t)
		t.Cleanup(sd.dumpOnFailure)
		const unit = "molt-probation.service"
		ev := serviceEvents{filepath.Join(dirs["probation"], "events")}
		sd.ctl("start", unit)
		marker := filepath.Join(dirs["probation"], crashReadyFile)
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		ld := startLoad([]string{url(ports[9])}, 3, 2)
		before := sd.mainPID(unit)
		const n = 5
		for i := range n {
			code, out := sd.reload(unit)
			p := sd.show(unit, "MainPID", "ActiveState", "SubState", "StatusText", "ReloadResult")
			if code == 0 || p["ReloadResult"] != "exit-code" {
				t.Errorf("rolled-back reload %d: exit code %d, ReloadResult=%s; want non-zero, exit-code (%s)", i+1, code, p["ReloadResult"], out)
			}
			if pid, _ := strconv.Atoi(p["MainPID"]); pid != before || p["ActiveState"] != "active" || p["SubState"] != "running" {
				t.Errorf("rolled-back reload %d: MainPID %s, %s/%s; want %d, active/running", i+1, p["MainPID"], p["ActiveState"], p["SubState"], before)
			}
			if !strings.Contains(p["StatusText"], "rolled back: successor pid") {
				t.Errorf("rolled-back reload %d: StatusText %q, want the rollback", i+1, p["StatusText"])
			}
		}
		if got := len(ev.find("crash")); got != n {
			t.Errorf("%d successors crashed after Ready, want %d", got, n)
		}
		os.Remove(marker)
		if code, out := sd.reload(unit); code != 0 {
			t.Errorf("reload after the rollbacks: exit code %d (%s), want 0", code, out)
		}
		after := sd.mainPID(unit)
		if after == before || len(ev.find("ready", fmt.Sprintf("pid=%d", after))) != 1 {
			t.Errorf("after the probation passed MainPID is %d (was %d), want the successor that reported ready", after, before)
		}
		waitFor(t, "the first generation to exit", 60*time.Second, func() bool {
			return len(ev.find("exit", fmt.Sprintf("pid=%d", before))) == 1
		})
		st := ld.finish()
		t.Logf("%d rolled-back reloads and a good one under load: %v", n, st)
		// No connection is refused. A request the crashed successor had
		// accepted is lost with it (the documented cost of a rollback):
		// at most one per client and crash, and only as a lost connection.
		if st.Refused != 0 || st.OK == 0 || st.Failed > n*5 {
			t.Errorf("load: %v; errors: %q", st, st.Errors)
		}
		for _, e := range st.Errors {
			if !strings.Contains(e, "EOF") && !strings.Contains(e, "connection reset") {
				t.Errorf("a request failed other than by its connection's loss in a crash: %s", e)
			}
		}
		sd.ctl("stop", unit)
	})

	// Takeover between units: starting the other unit takes the service
	// over; the unit taken over from drains, exits and ends inactive with
	// Result=success; the one that took over is active with its own
	// MainPID. No request fails.
	t.Run("takeover-units", func(t *testing.T) {
		sd := sd.in(t)
		t.Cleanup(sd.dumpOnFailure)
		units := []string{"molt-bg@blue.service", "molt-bg@green.service"}
		sd.ctl("start", units[0])
		ld := startLoad([]string{url(ports[10])}, 3, 2)
		pids := []int{sd.mainPID(units[0])}
		const n = 4
		for i := range n {
			from, to := units[i%2], units[(i+1)%2]
			sd.ctl("start", to)
			pid := sd.mainPID(to)
			p := sd.show(to, "ActiveState", "SubState", "StatusText")
			if pid == 0 || pid == pids[len(pids)-1] || p["ActiveState"] != "active" || !strings.Contains(p["StatusText"], "took over from pid") {
				t.Errorf("takeover %d: %s MainPID %d, %v; want a new process, active, having taken over", i+1, to, pid, p)
			}
			waitFor(t, from+" to end", 60*time.Second, func() bool {
				return sd.show(from, "ActiveState")["ActiveState"] == "inactive"
			})
			if q := sd.show(from, "Result", "ExecMainStatus"); q["Result"] != "success" || q["ExecMainStatus"] != "0" {
				t.Errorf("takeover %d: %s ended with %v, want success and status 0", i+1, from, q)
			}
			pids = append(pids, pid)
		}
		st := ld.finish()
		t.Logf("%d takeovers between two units under load: %v; MainPIDs %v", n, st, pids)
		if st.Failed != 0 || st.Refused != 0 || st.OK == 0 {
			t.Errorf("load: %v; errors: %q", st, st.Errors)
		}
		sd.ctl("stop", units[n%2])
	})

	t.Run("stop", func(t *testing.T) {
		sd := sd.in(t)
		t.Cleanup(sd.dumpOnFailure)
		const unit = "molt-reload.service"
		ev := serviceEvents{filepath.Join(dirs["reload"], "events")}
		main := sd.mainPID(unit)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		wait, err := slowRequests(ctx, url(ports[0]), 8, 1500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		// Watch the unit while it stops.
		var (
			mu       sync.Mutex
			seen     []string
			stopping = make(chan struct{})
			watched  = make(chan struct{})
		)
		go func() {
			defer close(watched)
			for {
				out, _ := sd.run("systemctl", "show", "-p", "SubState,StatusText", unit)
				mu.Lock()
				line := strings.ReplaceAll(strings.TrimSpace(out), "\n", " ")
				if len(seen) == 0 || seen[len(seen)-1] != line {
					seen = append(seen, line)
				}
				mu.Unlock()
				select {
				case <-stopping:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		start := time.Now()
		sd.ctl("stop", unit)
		took := time.Since(start)
		close(stopping)
		<-watched
		errs := wait()
		t.Logf("systemctl stop took %v with 8 requests of 1.5 s in flight; states seen: %q", took.Round(time.Millisecond), seen)
		if len(errs) != 0 {
			t.Errorf("%d of 8 in-flight requests failed: %v", len(errs), errs)
		}
		if !slices.ContainsFunc(seen, func(s string) bool {
			return strings.Contains(s, "SubState=stop") && strings.Contains(s, "StatusText=stopping")
		}) {
			t.Errorf("never saw the STOPPING status while stopping: %q", seen)
		}
		if j := sd.journal(""); !regexp.MustCompile(fmt.Sprintf(`Got notification message from PID %d \(STOPPING=1, `, main)).MatchString(j) {
			t.Errorf("systemd did not log STOPPING=1 from PID %d", main)
		} else if regexp.MustCompile(fmt.Sprintf(`Got notification message from PID %d \(.*EXTEND_TIMEOUT_USEC=`, main)).MatchString(j) {
			t.Errorf("PID %d extended the stop timeout without Options.ExtendStopTimeout", main)
		}
		if lines := ev.find("exit", fmt.Sprintf("pid=%d", main)); len(lines) != 1 || !strings.Contains(lines[0], `drain_err=""`) {
			t.Errorf("main process exit: %q", lines)
		}
		p := logShow(t, sd, unit, "after stop")
		if p["ActiveState"] != "inactive" || p["Result"] != "success" || p["ExecMainStatus"] != "0" {
			t.Errorf("after stop: %s, result %s, status %s; want inactive, success, 0", p["ActiveState"], p["Result"], p["ExecMainStatus"])
		}
	})

	// TimeoutStopSec= bounds a stop whose drain would take longer: with a
	// request of a minute in flight in the main generation (a successor,
	// after a reload), systemd kills the unit when the timeout passes and
	// the unit ends failed with Result=timeout and the last STATUS=.
	// Without TimeoutStopFailureMode=kill it takes twice as long.
	t.Run("stop-bound", func(t *testing.T) {
		for _, tc := range []struct {
			unit, dir string
			timeout   time.Duration
			min, max  time.Duration // the stop's duration
			port      int
		}{
			{"molt-bound.service", "bound", boundStop, boundStop - 500*time.Millisecond, boundStop + stopMargin, ports[6]},
			{"molt-term.service", "term", termStop, 2*termStop - 500*time.Millisecond, 2*termStop + stopMargin, ports[7]},
		} {
			sd := sd.in(t)
			took, errs, p := stopWithSlowRequest(t, sd, tc.unit, url(tc.port), time.Minute)
			t.Logf("%s: TimeoutStopSec=%v, a request of 1m in flight: systemctl stop took %v (want %v to %v); the request: %v",
				tc.unit, tc.timeout, took.Round(time.Millisecond), tc.min, tc.max, errs)
			logProps(t, tc.unit, "after a stop that timed out", p)
			if took < tc.min || took > tc.max {
				t.Errorf("%s: stop took %v, want %v to %v", tc.unit, took.Round(time.Millisecond), tc.min, tc.max)
			}
			if len(errs) != 1 {
				t.Errorf("%s: the request of a minute did not fail: %v", tc.unit, errs)
			}
			if p["ActiveState"] != "failed" || p["Result"] != "timeout" || p["StatusText"] != "stopping: draining" {
				t.Errorf("%s after the stop: ActiveState=%s Result=%s StatusText=%q; want failed, timeout, %q",
					tc.unit, p["ActiveState"], p["Result"], p["StatusText"], "stopping: draining")
			}
			sd.ctl("reset-failed", tc.unit)
		}
	})

	// Options.ExtendStopTimeout: the main process extends the stop timeout
	// while it drains, and a request longer than TimeoutStopSec= completes.
	t.Run("stop-extend", func(t *testing.T) {
		sd := sd.in(t)
		const unit = "molt-extend.service"
		const request = 2*extendStop + time.Second
		took, errs, p := stopWithSlowRequest(t, sd, unit, url(ports[8]), request)
		t.Logf("%s: TimeoutStopSec=%v, ExtendStopTimeout, a request of %v in flight: systemctl stop took %v; the request: %v",
			unit, extendStop, request, took.Round(time.Millisecond), errs)
		logProps(t, unit, "after an extended stop", p)
		if took < request-500*time.Millisecond || took > request+stopMargin {
			t.Errorf("stop took %v, want about %v (the request), more than TimeoutStopSec=%v", took.Round(time.Millisecond), request, extendStop)
		}
		if len(errs) != 0 {
			t.Errorf("the request failed: %v", errs)
		}
		if p["ActiveState"] != "inactive" || p["Result"] != "success" {
			t.Errorf("after the stop: ActiveState=%s Result=%s; want inactive, success", p["ActiveState"], p["Result"])
		}
		if j := sd.journal(""); !regexp.MustCompile(`\(STOPPING=1, STATUS=stopping: draining, EXTEND_TIMEOUT_USEC=30000000\)`).MatchString(j) {
			t.Errorf("systemd did not log STOPPING=1 with EXTEND_TIMEOUT_USEC")
		}
	})

	t.Run("socket-activation", func(t *testing.T) {
		sd := sd.in(t)
		t.Cleanup(sd.dumpOnFailure)
		const unit = "molt-sock.service"
		ev := serviceEvents{filepath.Join(dirs["sock"], "events")}
		sd.ctl("start", "molt-web.socket", "molt-admin.socket")
		sd.ctl("start", unit)
		logShow(t, sd, unit, "after start")
		ld := startLoad([]string{url(ports[1]), url(ports[2])}, 2, 1)
		for i := range 5 {
			prev := sd.mainPID(unit)
			sd.ctl("reload", unit)
			p := sd.show(unit, "MainPID", "ActiveState", "SubState")
			if pid, _ := strconv.Atoi(p["MainPID"]); pid == prev || p["SubState"] != "running" {
				t.Errorf("reload %d: MainPID %s (was %d), %s/%s", i+1, p["MainPID"], prev, p["ActiveState"], p["SubState"])
			}
		}
		waitFor(t, "5 old generations to exit", 60*time.Second, func() bool { return len(ev.find("exit")) >= 5 })
		last := sd.mainPID(unit)
		// Both sockets are served by the last generation now.
		for _, port := range []int{ports[1], ports[2]} {
			who, err := get(oneShotClient(), url(port))
			if err != nil || !strings.HasPrefix(who, fmt.Sprintf("pid=%d ", last)) {
				t.Errorf("port %d: %q, %v; want an answer from pid %d", port, who, err, last)
			}
		}
		st := ld.finish()
		t.Logf("two named sockets, 5 reloads, under load: %v; answers by process: %v", st, st.PIDs)
		if st.Failed != 0 || st.Refused != 0 || st.OK == 0 {
			t.Errorf("load: %v; errors: %q", st, st.Errors)
		}
		starts := ev.find("start")
		t.Logf("starts:\n%s", strings.Join(starts, "\n"))
		if len(starts) != 6 || !strings.Contains(starts[0], `listen_fds="2"`) ||
			!strings.Contains(starts[0], `listen_fdnames="web:admin"`) && !strings.Contains(starts[0], `listen_fdnames="admin:web"`) {
			t.Errorf("generation 1 should have been passed LISTEN_FDS=2 and LISTEN_FDNAMES with web and admin")
		}
		for _, s := range starts {
			if strings.Contains(s, "listen_left=true") {
				t.Errorf("LISTEN_FDS left in the environment after Attach: %s", s)
			}
		}
		for _, s := range starts[1:] {
			if !strings.Contains(s, `listen_pid="" listen_fds="" listen_fdnames=""`) {
				t.Errorf("a successor saw LISTEN_*: %s", s)
			}
		}
		for _, s := range ev.find("serving") {
			if !strings.Contains(s, fmt.Sprintf("web@127.0.0.1:%d", ports[1])) || !strings.Contains(s, fmt.Sprintf("admin@127.0.0.1:%d", ports[2])) {
				t.Errorf("a generation did not serve both sockets: %s", s)
			}
		}
		sd.ctl("stop", unit)
	})

	t.Run("fdstore", func(t *testing.T) {
		sd := sd.in(t)
		t.Cleanup(sd.dumpOnFailure)
		const unit = "molt-store.service"
		ev := serviceEvents{filepath.Join(dirs["store"], "events")}
		sd.ctl("start", unit)
		for range 2 { // the stored socket was made by generation 1; gen 3 is main now
			sd.ctl("reload", unit)
		}
		logShow(t, sd, unit, "after start and 2 reloads")

		ld := startLoad([]string{url(ports[3])}, 2, 3)
		time.Sleep(300 * time.Millisecond) // load before the crash
		main := sd.mainPID(unit)
		sd.must("kill", "-9", strconv.Itoa(main))
		waitFor(t, "a restart", 30*time.Second, func() bool {
			p := sd.show(unit, "NRestarts", "SubState", "MainPID")
			return p["NRestarts"] == "1" && p["SubState"] == "running" && p["MainPID"] != strconv.Itoa(main)
		})
		time.Sleep(500 * time.Millisecond) // load after the restart
		st := ld.finish()
		t.Logf("kill -9 of main pid %d under load: %v; first errors: %q", main, st, st.Errors)
		if st.Refused != 0 || st.OK == 0 {
			t.Errorf("kill -9: %v; errors: %q", st, st.Errors)
		}
		// Only requests the killed process had already accepted may fail:
		// at most one per client.
		if st.Failed > 5 {
			t.Errorf("kill -9: %d failed requests, more than the 5 clients could have in flight", st.Failed)
		}
		starts := ev.find("start", "gen=1")
		if len(starts) != 2 || !strings.Contains(starts[1], `listen_fds="1" listen_fdnames="http"`) {
			t.Errorf("the restarted process was not passed the stored socket: %q", starts)
		}
		logShow(t, sd, unit, "after kill -9")

		ld = startLoad([]string{url(ports[3])}, 2, 3)
		time.Sleep(300 * time.Millisecond)
		start := time.Now()
		sd.ctl("restart", unit)
		took := time.Since(start)
		time.Sleep(300 * time.Millisecond)
		st = ld.finish()
		t.Logf("systemctl restart (%v) under load: %v", took.Round(time.Millisecond), st)
		if st.Refused != 0 || st.Failed != 0 || st.OK == 0 {
			t.Errorf("restart: %v; errors: %q", st, st.Errors)
		}
		p := logShow(t, sd, unit, "after restart")
		if p["NFileDescriptorStore"] != "" && p["NFileDescriptorStore"] != "1" {
			t.Errorf("NFileDescriptorStore=%s, want 1 (one socket, stored once)", p["NFileDescriptorStore"])
		}
		sd.ctl("stop", unit)
	})

	// Type=notify-reload without ExecReload= (SIGHUP), and the PID file
	// fallback without notifications (ExecReload=molt upgrade; MainPID
	// moves when the old generation exits).
	for _, tc := range []struct{ unit, dir string }{
		{"molt-nreload.service", "nreload"},
		{"molt-pidfile.service", "pidfile"},
	} {
		t.Run("variant-"+tc.dir, func(t *testing.T) {
			sd := sd.in(t)
			t.Cleanup(sd.dumpOnFailure)
			port := ports[4]
			if tc.dir == "pidfile" {
				port = ports[5]
			}
			ev := serviceEvents{filepath.Join(dirs[tc.dir], "events")}
			sd.ctl("start", tc.unit)
			// Type=simple: start returns before the service listens.
			waitFor(t, "the service to listen", 30*time.Second, func() bool {
				_, err := get(oneShotClient(), url(port))
				return err == nil
			})
			logShow(t, sd, tc.unit, "after start")
			ld := startLoad([]string{url(port)}, 2, 2)
			for i := range 3 {
				prev := sd.mainPID(tc.unit)
				sd.ctl("reload", tc.unit)
				waitFor(t, "MainPID to move", 30*time.Second, func() bool {
					p := sd.show(tc.unit, "MainPID", "SubState")
					pid, _ := strconv.Atoi(p["MainPID"])
					return pid != prev && pid != 0 && p["SubState"] == "running" &&
						len(ev.find("exit", fmt.Sprintf("pid=%d", prev))) == 1
				})
				if pid := sd.mainPID(tc.unit); len(ev.find("serving", fmt.Sprintf("pid=%d", pid), fmt.Sprintf("gen=%d", i+2))) != 1 {
					t.Errorf("reload %d: MainPID %d is not generation %d", i+1, pid, i+2)
				}
			}
			// A failed upgrade: notify-reload cannot tell systemd, the
			// PID file variant's ExecReload= can.
			marker := filepath.Join(dirs[tc.dir], failInitFile)
			if err := os.WriteFile(marker, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			before := sd.mainPID(tc.unit)
			code, out := sd.reload(tc.unit)
			p := logShow(t, sd, tc.unit, fmt.Sprintf("after a failed upgrade (systemctl reload exit code %d, %q)", code, strings.TrimSpace(out)))
			os.Remove(marker)
			if want := tc.dir == "pidfile"; (code != 0) != want {
				t.Errorf("failed upgrade: systemctl reload exit code %d; want non-zero: %t", code, want)
			}
			if pid, _ := strconv.Atoi(p["MainPID"]); pid != before || p["ActiveState"] != "active" {
				t.Errorf("failed upgrade: MainPID %d (was %d), %s; want the old one, active", pid, before, p["ActiveState"])
			}
			st := ld.finish()
			t.Logf("%s, 3 reloads and a failed one under load: %v", tc.unit, st)
			if st.Failed != 0 || st.Refused != 0 || st.OK == 0 {
				t.Errorf("load: %v; errors: %q", st, st.Errors)
			}
			p = logShow(t, sd, tc.unit, "after the reloads")
			if p["ActiveState"] != "active" || p["NRestarts"] != "0" {
				t.Errorf("%s/%s, %s restarts", p["ActiveState"], p["SubState"], p["NRestarts"])
			}
			sd.ctl("stop", tc.unit)
			if p := sd.show(tc.unit, "Result", "ExecMainStatus"); p["Result"] != "success" {
				t.Errorf("after stop: %v", p)
			}
		})
	}

	t.Run("journal", func(t *testing.T) {
		sd := sd.in(t)
		t.Cleanup(sd.dumpOnFailure)
		j := sd.journal("")
		notes := strings.Count(j, "Got notification message from PID")
		t.Logf("systemd logged %d notifications", notes)
		for _, line := range strings.Split(j, "\n") {
			if strings.Contains(line, "reception only permitted for main PID") || strings.Contains(line, "Watchdog timeout") {
				t.Errorf("systemd: %s", line)
			}
		}
		for _, unit := range []string{"molt-reload.service", "molt-sock.service", "molt-store.service", "molt-nreload.service",
			"molt-pidfile.service", "molt-bound.service", "molt-term.service", "molt-extend.service"} {
			uj := sd.journal(unit)
			if i := strings.Index(uj, "WARNING: DATA RACE"); i >= 0 {
				t.Errorf("%s: the race detector fired:\n%s", unit, uj[i:min(len(uj), i+6000)])
			}
		}
	})
}

// The stop timeouts of the stop tests, and the margin a stop may take
// beyond what it should: nsenter, systemctl, a loaded machine.
const (
	boundStop  = 5 * time.Second
	termStop   = 3 * time.Second
	extendStop = 3 * time.Second
	stopMargin = 4 * time.Second
)

// reloadProps are the properties a reload's result shows in.
var reloadProps = []string{"Result", "ReloadResult", "ActiveState", "SubState", "MainPID", "StatusText"}

// reload runs systemctl reload and returns its exit code and output.
func (s *nsSystemd) reload(unit string) (int, string) {
	s.t.Helper()
	out, err := s.run("systemctl", "reload", unit)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out
	case errors.As(err, &ee):
		return ee.ExitCode(), out
	}
	s.t.Fatalf("systemctl reload %s: %v", unit, err)
	return -1, out
}

// stopWithSlowRequest starts unit, upgrades it once (so that the main
// process is a successor, as after any reload), starts one request that
// takes d on the server, and stops the unit. It returns how long
// `systemctl stop` took, the request's error if any, and the unit's
// properties after the stop.
func stopWithSlowRequest(t *testing.T, sd *nsSystemd, unit, url string, d time.Duration) (time.Duration, []error, map[string]string) {
	t.Helper()
	t.Cleanup(sd.dumpOnFailure)
	sd.ctl("start", unit)
	sd.ctl("reload", unit)
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
	defer cancel()
	wait, err := slowRequests(ctx, url, 1, d)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := sd.run("systemctl", "stop", unit)
	took := time.Since(start)
	if err != nil {
		t.Logf("systemctl stop %s: %v: %s", unit, err, out)
	}
	errs := wait()
	return took, errs, sd.show(unit, append(reloadProps, "ExecMainStatus", "ExecMainCode")...)
}

// reloads runs systemctl reload on unit 10 times and calls check after
// each with the reload's number (from 0), its exit code and the unit's
// reloadProps then; the first is logged as a "kind" reload. It returns
// how long each reload took.
func reloads(t *testing.T, sd *nsSystemd, unit, kind string, check func(i, code int, p map[string]string)) []time.Duration {
	t.Helper()
	var took []time.Duration
	for i := range 10 {
		start := time.Now()
		code, out := sd.reload(unit)
		took = append(took, time.Since(start))
		p := sd.show(unit, reloadProps...)
		if i == 0 {
			t.Logf("%s reload: systemctl reload exit code %d, output %q", kind, code, strings.TrimSpace(out))
			logProps(t, unit, "after a "+kind+" reload", p)
		}
		check(i, code, p)
	}
	return took
}

// logProps logs properties in a stable order.
func logProps(t *testing.T, unit, when string, p map[string]string) {
	t.Helper()
	var keys []string
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%q", k, p[k])
	}
	t.Logf("%s %s:%s", unit, when, b.String())
}

// logShow logs and returns the properties the report quotes.
func logShow(t *testing.T, sd *nsSystemd, unit, when string) map[string]string {
	t.Helper()
	p := sd.show(unit, "MainPID", "ActiveState", "SubState", "Result", "NRestarts", "StatusText",
		"ExecMainStatus", "NFileDescriptorStore", "ReloadResult", "NotifyAccess", "Type")
	logProps(t, unit, when, p)
	return p
}

// durations summarises reload durations: p50 and max.
func durations(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	return fmt.Sprintf("n=%d p50=%v max=%v min=%v", len(s), s[len(s)/2].Round(time.Millisecond),
		s[len(s)-1].Round(time.Millisecond), s[0].Round(time.Millisecond))
}
