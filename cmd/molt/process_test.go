//go:build unix

package main

import (
	"encoding/json"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moltgo/molt/internal/proctest"

	"github.com/moltgo/molt/control"
)

func decodeReply(t *testing.T, r result) control.Reply {
	t.Helper()
	var rep control.Reply
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("--json output %q: %v", r.stdout, err)
	}
	return rep
}

var upgradedLine = regexp.MustCompile(`^upgraded: pid (\d+) serves as generation (\d+) \(took [0-9.]+[µm]?s; pid (\d+) drains and exits\)\n$`)

// TestCLIUpgrade upgrades a service twice with the molt command, checks
// the new PIDs against the services' own reports, asks for the status and
// stops the service.
func TestCLIUpgrade(t *testing.T) {
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	svc := startService(t, sock)

	r := moltCLI(t, "-s", sock, "upgrade")
	m := upgradedLine.FindStringSubmatch(r.stdout)
	if r.code != exitOK || m == nil || r.stderr != "" {
		t.Fatalf("molt upgrade: exit %d, stdout %q, stderr %q; want 0 and the new PID", r.code, r.stdout, r.stderr)
	}
	ready := svc.ev.Wait(t, "ready")
	if m[1] != ready["pid"] || m[2] != "2" || ready["gen"] != "2" || m[3] != strconv.Itoa(svc.pid) {
		t.Errorf("molt upgrade said pid %s generation %s (from %s); the successor reported %v (from %d)", m[1], m[2], m[3], ready, svc.pid)
	}
	pid2, _ := strconv.Atoi(ready["pid"])

	r = moltCLI(t, "upgrade", "--json", "--socket", sock)
	rep := decodeReply(t, r)
	ready = svc.ev.Wait(t, "ready")
	if r.code != exitOK || !rep.OK || rep.Code != control.CodeOK || rep.Upgrade == nil ||
		strconv.Itoa(rep.Upgrade.SuccessorPID) != ready["pid"] || rep.Upgrade.Successor() != 3 || rep.PID != pid2 {
		t.Errorf("molt upgrade --json: exit %d, %+v; want ok, successor %v", r.code, rep, ready)
	}
	pid3, _ := strconv.Atoi(ready["pid"])

	r = moltCLI(t, "status", "-s", sock)
	for _, want := range []string{
		"pid           " + ready["pid"] + "\n",
		"generation    3 (parent pid " + strconv.Itoa(pid2) + ")\n",
		"state         ready\n",
		"upgrades      2 done, 0 failed\n",
		"last upgrade  ok: pid " + ready["pid"] + " took over from pid " + strconv.Itoa(pid2) + " as generation 3 in ",
		"listeners     unix  " + sock + "  inherited  control\n",
		"tcp4  127.0.0.1:",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("molt status output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "127.0.0.1:0 ") {
		t.Errorf("molt status shows the requested :0, want the listener's real port:\n%s", r.stdout)
	}
	if r.code != exitOK {
		t.Errorf("molt status: exit %d", r.code)
	}
	t.Logf("molt status:\n%s", r.stdout)

	t.Setenv(envSocket, sock) // the environment variable instead of -s
	r = moltCLI(t, "status", "--json")
	if rep := decodeReply(t, r); r.code != exitOK || rep.Status == nil || rep.Status.PID != pid3 || rep.Status.Generation != 3 || rep.Status.Upgrades != 2 {
		t.Errorf("molt status --json: exit %d, %s", r.code, r.stdout)
	}

	r = moltCLI(t, "stop")
	if want := "stopping: pid " + ready["pid"] + " (generation 3) stops accepting, drains and exits\n"; r.code != exitOK || r.stdout != want {
		t.Errorf("molt stop: exit %d, stdout %q; want 0, %q", r.code, r.stdout, want)
	}
	exits := map[string]string{} // pid → reason
	for range 3 {
		got := svc.ev.Wait(t, "exiting")
		exits[got["pid"]] = got["reason"]
	}
	if want := map[string]string{strconv.Itoa(svc.pid): "upgraded", strconv.Itoa(pid2): "upgraded", ready["pid"]: "stopped"}; !maps.Equal(exits, want) {
		t.Errorf("generations exited as %v, want %v", exits, want)
	}
	proctest.WaitGone(t, pid3)

	r = moltCLI(t, "status")
	if r.code != exitUnreachable || !strings.Contains(r.stderr, "socket unreachable") {
		t.Errorf("molt status after stop: exit %d, stderr %q; want %d, unreachable", r.code, r.stderr, exitUnreachable)
	}
	r = moltCLI(t, "status", "--json")
	if rep := decodeReply(t, r); r.code != exitUnreachable || rep.OK || rep.Code != "unreachable" {
		t.Errorf("molt status --json after stop: exit %d, %s", r.code, r.stdout)
	}
}

// TestCLIUpgradeFails: a successor that exits during its start makes molt
// upgrade exit non-zero with the reason, and the service goes on.
func TestCLIUpgradeFails(t *testing.T) {
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	svc := startService(t, sock, envNext+"=fail-init")

	r := moltCLI(t, "-s", sock, "upgrade")
	failed := regexp.MustCompile(`^molt: upgrade failed after [0-9.]+[µm]?s: successor pid \d+ failed during init: exit status 3\n` +
		`molt: pid ` + strconv.Itoa(svc.pid) + ` \(generation 1\) goes on serving\n$`)
	if r.code != exitFailed || !failed.MatchString(r.stderr) || r.stdout != "" {
		t.Errorf("molt upgrade: exit %d, stdout %q, stderr %q; want %d and the reason", r.code, r.stdout, r.stderr, exitFailed)
	}

	r = moltCLI(t, "-s", sock, "upgrade", "--json")
	rep := decodeReply(t, r)
	u := rep.Upgrade
	if r.code != exitFailed || rep.OK || rep.Code != control.CodeFailed || u == nil || u.OK ||
		u.Reason != "exit status 3" || u.ExitCode == nil || *u.ExitCode != 3 || u.Stage != "init" ||
		!strings.Contains(rep.Error, "exit status 3") || rep.PID != svc.pid {
		t.Errorf("molt upgrade --json: exit %d, %s; want failed with exit status 3", r.code, r.stdout)
	}

	r = moltCLI(t, "-s", sock, "status")
	if r.code != exitOK || !strings.Contains(r.stdout, "pid           "+strconv.Itoa(svc.pid)+"\n") ||
		!strings.Contains(r.stdout, "upgrades      0 done, 2 failed\n") ||
		!strings.Contains(r.stdout, "failed during init: exit status 3") {
		t.Errorf("molt status after the failures: exit %d\n%s", r.code, r.stdout)
	}
}

// TestCLICheck: molt check runs the new binary's check without upgrading;
// a failing check fails molt upgrade before a successor starts, and both
// show the check's output.
func TestCLICheck(t *testing.T) {
	dir := proctest.ShortDir(t)
	sock, config := filepath.Join(dir, "c.sock"), filepath.Join(dir, "svc.conf")
	if err := os.WriteFile(config, []byte("good"), 0o644); err != nil {
		t.Fatal(err)
	}
	svc := startService(t, sock, envConfig+"="+config)

	r := moltCLI(t, "-s", sock, "check")
	if r.code != exitOK || !regexp.MustCompile(`^check passed in [0-9.]+[µm]?s: the new binary may be upgraded to\n$`).MatchString(r.stdout) {
		t.Errorf("molt check (good configuration): exit %d, stdout %q, stderr %q; want it passed", r.code, r.stdout, r.stderr)
	}
	if err := os.WriteFile(config, []byte("bad"), 0o644); err != nil {
		t.Fatal(err)
	}
	failed := regexp.MustCompile(`^molt: (check|upgrade) failed after [0-9.]+[µm]?s: the new binary's check \(pid \d+\) failed: exit status 1\n` +
		`molt: the check's output:\n  read ` + regexp.QuoteMeta(config) + `\n  molt: check failed: ` + regexp.QuoteMeta(config) + `: bad configuration\n`)
	r = moltCLI(t, "-s", sock, "check")
	if r.code != exitFailed || !failed.MatchString(r.stderr) || r.stdout != "" {
		t.Errorf("molt check (bad configuration): exit %d, stdout %q, stderr %q; want %d and the check's output", r.code, r.stdout, r.stderr, exitFailed)
	}
	r = moltCLI(t, "-s", sock, "upgrade")
	if r.code != exitFailed || !failed.MatchString(r.stderr) || !strings.HasSuffix(r.stderr, "molt: pid "+strconv.Itoa(svc.pid)+" (generation 1) goes on serving\n") {
		t.Errorf("molt upgrade (bad configuration): exit %d, stdout %q, stderr %q; want %d and the check's output", r.code, r.stdout, r.stderr, exitFailed)
	}
	r = moltCLI(t, "-s", sock, "--json", "upgrade")
	if rep := decodeReply(t, r); r.code != exitFailed || rep.Upgrade == nil || rep.Upgrade.Stage != "check" || !strings.Contains(rep.Upgrade.Output, "bad configuration") {
		t.Errorf("molt upgrade --json (bad configuration): exit %d, %s; want stage check with the output", r.code, r.stdout)
	}
	r = moltCLI(t, "-s", sock, "status", "--json")
	if st := decodeReply(t, r).Status; st == nil || st.PID != svc.pid || st.Generation != 1 || st.FailedUpgrades != 2 || st.LastUpgrade == nil || st.LastUpgrade.Stage != "check" {
		t.Errorf("status after the failed checks: %s; want generation 1, 2 failed upgrades, the last at stage check", r.stdout)
	}
	if err := os.WriteFile(config, []byte("good"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := moltCLI(t, "-s", sock, "upgrade"); r.code != exitOK || !upgradedLine.MatchString(r.stdout) {
		t.Errorf("molt upgrade (good configuration again): exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if ready := svc.ev.Wait(t, "ready"); ready["gen"] != "2" {
		t.Errorf("the first successor ready is %v, want generation 2: none was started for the failed checks", ready)
	}
	moltCLI(t, "-s", sock, "stop")
}

// TestCLITakeover: molt takeover starts a program that takes over from the
// service's takeover socket and reports when it serves; the control socket
// follows it. A program that fails before taking over makes molt takeover
// fail, and the service serves on.
func TestCLITakeover(t *testing.T) {
	dir := proctest.ShortDir(t)
	sock, tsock, logs := filepath.Join(dir, "c.sock"), filepath.Join(dir, "t.sock"), filepath.Join(dir, "taker.log")
	svc := startService(t, sock, envTakeSock+"="+tsock)
	// The program plays a role of this binary, with its output in a file
	// (molt takeover passes on its own standard streams).
	t.Cleanup(func() {
		if b, _ := os.ReadFile(logs); t.Failed() {
			t.Logf("the programs' output:\n%s", b)
		}
	})
	program := func(role string) []string {
		return []string{"/bin/sh", "-c", `exec env ` + envRole + `=` + role + ` ` + envSock + `="$2" ` + envTakeSock + `="$3" "$0" >>"$1" 2>&1`,
			os.Args[0], logs, sock, tsock}
	}

	r := moltCLI(t, append([]string{"-s", tsock, "takeover", "--"}, program("fail-init")...)...)
	if r.code != exitFailed || !strings.Contains(r.stderr, "molt: takeover failed: pid ") || !strings.Contains(r.stderr, "exit status 3") ||
		!strings.Contains(r.stderr, "goes on serving") {
		t.Errorf("molt takeover of a program that fails: exit %d, stdout %q, stderr %q; want %d and its exit status", r.code, r.stdout, r.stderr, exitFailed)
	}
	if st := decodeReply(t, moltCLI(t, "-s", sock, "status", "--json")).Status; st == nil || st.PID != svc.pid {
		t.Fatalf("status after the failed takeover: %+v, want pid %d serving", st, svc.pid)
	}

	r = moltCLI(t, append([]string{"-s", tsock, "--json", "takeover", "--"}, program("service")...)...)
	var res takeoverResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != exitOK || !res.OK || res.Generation != 2 || res.PID == 0 {
		t.Fatalf("molt takeover --json: exit %d, stdout %q (%v), stderr %q; want ok, generation 2", r.code, r.stdout, err, r.stderr)
	}
	if x := svc.ev.Wait(t, "exiting"); x["pid"] != strconv.Itoa(svc.pid) || x["reason"] != "upgraded" {
		t.Errorf("after the takeover %v exited, want pid %d, upgraded", x, svc.pid)
	}
	st := decodeReply(t, moltCLI(t, "-s", sock, "status", "--json")).Status
	if st == nil || st.PID != res.PID || st.Generation != 2 || st.ParentPID != svc.pid {
		t.Errorf("status after the takeover: %+v, want pid %d, generation 2, parent %d", st, res.PID, svc.pid)
	}
	moltCLI(t, "-s", sock, "stop")
	proctest.WaitGone(t, res.PID)
}

// TestCLIUpgradeIfGeneration: --if-generation upgrades only the named
// generation, so a second deployer that read the same generation as the
// first is refused instead of stacking an upgrade on the first one's.
func TestCLIUpgradeIfGeneration(t *testing.T) {
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	svc := startService(t, sock)

	r := moltCLI(t, "-s", sock, "upgrade", "--if-generation", "2")
	if want := "molt: upgrade: generation 1 serves, not generation 2; nothing was started (generation_changed)\n"; r.code != exitGeneration || r.stderr != want || r.stdout != "" {
		t.Errorf("molt upgrade --if-generation 2 (generation 1 serves): exit %d, stdout %q, stderr %q; want %d, %q", r.code, r.stdout, r.stderr, exitGeneration, want)
	}
	r = moltCLI(t, "-s", sock, "upgrade", "--if-generation", "1")
	if r.code != exitOK || !upgradedLine.MatchString(r.stdout) {
		t.Fatalf("molt upgrade --if-generation 1: exit %d, stdout %q, stderr %q; want the upgrade", r.code, r.stdout, r.stderr)
	}
	ready := svc.ev.Wait(t, "ready")
	// The second deployer read generation 1 too: the request reaches
	// generation 2, which refuses it.
	r = moltCLI(t, "-s", sock, "--json", "upgrade", "--if-generation", "1")
	rep := decodeReply(t, r)
	if r.code != exitGeneration || rep.Code != control.CodeGenerationChanged || rep.Generation != 2 || strconv.Itoa(rep.PID) != ready["pid"] || rep.Upgrade != nil {
		t.Errorf("molt upgrade --if-generation 1 (generation 2 serves): exit %d, %s; want %d, generation_changed from %v", r.code, r.stdout, exitGeneration, ready)
	}
	r = moltCLI(t, "-s", sock, "status", "--json")
	if st := decodeReply(t, r).Status; st == nil || st.Generation != 2 || st.Upgrades != 1 || st.FailedUpgrades != 0 {
		t.Errorf("status after the conditional upgrades: %s; want generation 2 after exactly one upgrade, none failed", r.stdout)
	}
	for _, args := range [][]string{{"status", "--if-generation", "1"}, {"upgrade", "--if-generation", "0"}, {"upgrade", "--if-generation", "x"}} {
		if r := moltCLI(t, append([]string{"-s", sock}, args...)...); r.code != exitUsage {
			t.Errorf("molt %q: exit %d, stderr %q; want %d", args, r.code, r.stderr, exitUsage)
		}
	}
	moltCLI(t, "-s", sock, "stop")
}

// TestCLIConcurrentUpgrades starts 20 molt upgrade at once: exactly one
// upgrade runs, the other 19 are told it is in progress.
func TestCLIConcurrentUpgrades(t *testing.T) {
	dir := proctest.ShortDir(t)
	sock := filepath.Join(dir, "c.sock")
	release := filepath.Join(dir, "release")
	svc := startService(t, sock, envNext+"=held", envRelease+"="+release)

	const n = 20
	results := make(chan result, n)
	for range n {
		cmd := cliCommand("-s", sock, "--json", "upgrade")
		go func() {
			r, err := runCmdErr(cmd)
			if err != nil {
				r.stderr, r.code = err.Error(), -1
			}
			results <- r
		}()
	}
	// The successor waits for the release file: until then the upgrade
	// cannot end, so every other request meets it running.
	held := svc.ev.Wait(t, "held")
	var inProgress int
	for i := range n - 1 {
		var r result
		select {
		case r = <-results:
		case <-time.After(2 * time.Minute):
			t.Fatalf("only %d of %d molt upgrade returned while the upgrade was held", i, n-1)
		}
		rep := decodeReply(t, r)
		if r.code != exitInProgress || rep.Code != control.CodeInProgress || !strings.Contains(rep.Error, "in progress") {
			t.Errorf("molt upgrade (while another ran): exit %d, %s; want %d, in_progress", r.code, r.stdout, exitInProgress)
			continue
		}
		inProgress++
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-results
	rep := decodeReply(t, r)
	ready := svc.ev.Wait(t, "ready")
	if r.code != exitOK || rep.Upgrade == nil || strconv.Itoa(rep.Upgrade.SuccessorPID) != held["pid"] || ready["pid"] != held["pid"] {
		t.Errorf("the one molt upgrade that ran: exit %d, %s; want ok with the held successor %v", r.code, r.stdout, held)
	}
	if inProgress != n-1 {
		t.Errorf("%d of %d molt upgrade were told in progress, want %d", inProgress, n, n-1)
	}
	r = moltCLI(t, "-s", sock, "status", "--json")
	if st := decodeReply(t, r).Status; st == nil || st.Generation != 2 || st.Upgrades != 1 || st.FailedUpgrades != 0 {
		t.Errorf("status after the upgrades: %s; want generation 2 after exactly one upgrade", r.stdout)
	}
	moltCLI(t, "-s", sock, "stop")
}

// TestCLIPermissionDenied runs molt as nobody. With the default mode 0600
// the socket file refuses; with mode 0666 the file lets nobody connect and
// the server's peer-credential check refuses. Needs root.
func TestCLIPermissionDenied(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run molt as another user")
	}
	// nobody must reach the socket and the binary: a directory it may
	// search, and a copy of this binary it may run.
	dir, err := os.MkdirTemp("", "mperm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "molt.test")
	copyFile(t, os.Args[0], exe, 0o755)
	asNobody := func(args ...string) result {
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), envRole+"=cli")
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		return runCmd(t, cmd)
	}

	t.Run("file mode", func(t *testing.T) {
		sock := filepath.Join(dir, "private.sock")
		startService(t, sock)
		r := asNobody("-s", sock, "status")
		if r.code != exitDenied || !strings.Contains(r.stderr, "permission denied") {
			t.Errorf("molt status as nobody: exit %d, stderr %q; want %d", r.code, r.stderr, exitDenied)
		}
	})

	t.Run("peer credentials", func(t *testing.T) {
		sock := filepath.Join(dir, "open.sock")
		svc := startService(t, sock, envMode+"=666")
		r := asNobody("-s", sock, "upgrade")
		want := "molt: upgrade: permission denied: peer uid 65534 is not allowed (only uid 0 and root)\n" +
			"molt: run molt as the service's user or as root\n"
		if r.code != exitDenied || r.stderr != want {
			t.Errorf("molt upgrade as nobody: exit %d, stderr %q; want %d, %q", r.code, r.stderr, exitDenied, want)
		}
		r = asNobody("-s", sock, "--json", "status")
		if rep := decodeReply(t, r); r.code != exitDenied || rep.Code != control.CodePermissionDenied || !strings.Contains(rep.Error, "uid 65534") {
			t.Errorf("molt status --json as nobody: exit %d, %s", r.code, r.stdout)
		}
		proctest.WaitUntil(t, "the service logged both refusals", func() bool {
			return strings.Count(svc.logs.String(), `"msg":"control: connection refused"`) == 2
		})
		for _, line := range strings.Split(svc.logs.String(), "\n") {
			if strings.Contains(line, "connection refused") &&
				(!strings.Contains(line, `"peer_uid":65534`) || !strings.Contains(line, `"peer_gid":65534`) ||
					!strings.Contains(line, `peer uid 65534 is not allowed`)) {
				t.Errorf("refusal logged as %s; want peer_uid, peer_gid 65534 and the reason", line)
			}
		}
		// Nothing happened: still generation 1, and root may still ask.
		if r := moltCLI(t, "-s", sock, "status"); r.code != exitOK || !strings.Contains(r.stdout, "pid           "+strconv.Itoa(svc.pid)+"\n") {
			t.Errorf("molt status as root: exit %d\n%s", r.code, r.stdout)
		}
	})
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
