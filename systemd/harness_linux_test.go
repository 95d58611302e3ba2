package systemd_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// This file boots a throw-away systemd as PID 1 of new PID and mount
// namespaces and drives it with systemctl through nsenter. It follows the
// safe recipe of shared/tools/systemd-ns.sh, because booting the machine's
// own targets would run systemd-tmpfiles-setup (which empties the shared
// /tmp) and start host services:
//
//   - a private tmpfs on /run (and on /var/log/journal, so the
//     namespace's journal never reaches the host's);
//   - /dev/null bound over /dev/console, so the namespace's systemd never
//     writes to the machine's console;
//   - every unit the host's *.target.wants pull in masked (journald
//     aside), plus systemd-remount-fs and the tmpfiles units by name;
//   - boot into an empty target; test units go into /run/systemd/system.
//
// The network namespace is the host's, so the test reaches the services
// over loopback. Tear-down kills the namespace's PID 1, which takes every
// process of the namespace (all started by the test) with it.

// envSystemdTest opts in to the real-systemd test.
const envSystemdTest = "MOLT_SYSTEMD_TEST"

const nsSetup = `set -e
mount -t tmpfs -o mode=755 tmpfs /run
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=755 tmpfs /var/log/journal; fi
mount --bind /dev/null /dev/console
mkdir -p /run/systemd/system
cd /run/systemd/system
for u in $MOLT_NS_MASKS; do ln -sf /dev/null "$u"; done
printf '[Unit]\nDescription=empty boot target for molt tests\n' > molt-ns.target
cp "$MOLT_NS_UNITS"/* /run/systemd/system/
exec "$MOLT_NS_SYSTEMD" --system --unit=molt-ns.target --log-target=console --log-level=warning --log-color=no
`

// requireSystemd returns the systemd binary, or skips the test when it was
// not asked for. Asked for (MOLT_SYSTEMD_TEST=1) but impossible here is a
// failure, so that CI cannot pass without running it.
func requireSystemd(t *testing.T) string {
	t.Helper()
	if os.Getenv(envSystemdTest) != "1" {
		t.Skipf("set %s=1 to run: boots systemd >= 253 as PID 1 in new PID and mount namespaces "+
			"(root, unshare, nsenter; .ci/systemd.sh installs systemd and runs it)", envSystemdTest)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s=1 but not root: booting systemd in a namespace needs root", envSystemdTest)
	}
	for _, tool := range []string{"unshare", "nsenter", "sh", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s=1 but %s is missing: %v", envSystemdTest, tool, err)
		}
	}
	sd, err := exec.LookPath("systemd")
	if err != nil {
		sd = "/lib/systemd/systemd"
	}
	out, err := exec.Command(sd, "--version").Output()
	if err != nil {
		t.Fatalf("%s=1 but %s --version: %v", envSystemdTest, sd, err)
	}
	var version int
	if _, err := fmt.Sscanf(string(out), "systemd %d", &version); err != nil || version < 253 {
		t.Fatalf("%s=1 but systemd is %q; need >= 253 for Type=notify-reload (run shared/tools/install-systemd.sh)",
			envSystemdTest, strings.SplitN(string(out), "\n", 2)[0])
	}
	t.Logf("systemd: %s (%s)", sd, strings.SplitN(string(out), "\n", 2)[0])
	return sd
}

// nsSystemd is a systemd running as PID 1 of its own namespaces.
type nsSystemd struct {
	t      *testing.T
	pid    int           // host PID of the namespace's systemd
	exited chan struct{} // closed when unshare has exited and been reaped
}

// bootSystemd boots systemd with the unit files of unitDir installed, waits
// until it runs, starts its journal and turns on debug logging to it.
func bootSystemd(t *testing.T, systemdPath, unitDir, logPath string) *nsSystemd {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "--mount", "--propagation", "private", "sh", "-c", nsSetup)
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"MOLT_NS_MASKS=" + strings.Join(hostMasks(t), " "),
		"MOLT_NS_UNITS=" + unitDir,
		"MOLT_NS_SYSTEMD=" + systemdPath,
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	s := &nsSystemd{t: t, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(s.exited) }()
	t.Cleanup(s.stop)

	deadline := time.Now().Add(30 * time.Second)
	for s.pid == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no systemd under unshare (pid %d); log: %s", cmd.Process.Pid, readFile(logPath))
		}
		s.pid = childNamed(cmd.Process.Pid, "systemd")
		if s.pid == 0 {
			waitOrExit(t, s.exited, 20*time.Millisecond, logPath)
		}
	}
	for {
		out, _ := s.run("systemctl", "is-system-running")
		if st := strings.TrimSpace(out); st == "running" || st == "degraded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd (pid %d) did not come up: %q; log: %s", s.pid, out, readFile(logPath))
		}
		waitOrExit(t, s.exited, 50*time.Millisecond, logPath)
	}
	s.must("systemctl", "start", "systemd-journald.service")
	s.must("systemd-analyze", "log-target", "journal")
	s.must("systemd-analyze", "log-level", "debug")
	t.Logf("systemd booted as PID 1 of a new namespace (host pid %d)", s.pid)
	return s
}

func waitOrExit(t *testing.T, exited <-chan struct{}, d time.Duration, logPath string) {
	t.Helper()
	select {
	case <-exited:
		t.Fatalf("unshare exited; log: %s", readFile(logPath))
	case <-time.After(d):
	}
}

// in returns s for use by test t (a subtest): its failures are t's.
func (s *nsSystemd) in(t *testing.T) *nsSystemd {
	c := *s
	c.t = t
	return &c
}

// dumpOnFailure logs the end of the journal when the test failed.
func (s *nsSystemd) dumpOnFailure() {
	if !s.t.Failed() {
		return
	}
	out, _ := s.run("journalctl", "--no-pager", "-o", "short-monotonic", "-n", "3000")
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "Sent message type=") || strings.Contains(line, "private-bus-connection") ||
			strings.Contains(line, "Registering bus object") || strings.Contains(line, "(sd-close)") {
			continue
		}
		keep = append(keep, line)
	}
	s.t.Logf("journal:\n%s", strings.Join(keep[max(0, len(keep)-400):], "\n"))
}

// stop kills the namespace's PID 1, which ends every process in the
// namespace, and reaps unshare.
func (s *nsSystemd) stop() {
	if s.pid != 0 {
		syscall.Kill(s.pid, syscall.SIGKILL)
	}
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.t.Errorf("unshare did not exit after its systemd (pid %d) was killed", s.pid)
	}
}

// run runs a command inside the namespace and returns its output.
func (s *nsSystemd) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	argv := append([]string{"-t", strconv.Itoa(s.pid), "-m", "-p", "--", name}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (s *nsSystemd) must(name string, args ...string) string {
	s.t.Helper()
	out, err := s.run(name, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// ctl runs systemctl inside and fails the test on error.
func (s *nsSystemd) ctl(args ...string) string {
	s.t.Helper()
	return s.must("systemctl", args...)
}

// show returns unit properties.
func (s *nsSystemd) show(unit string, props ...string) map[string]string {
	s.t.Helper()
	out := s.ctl("show", "-p", strings.Join(props, ","), unit)
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

func (s *nsSystemd) mainPID(unit string) int {
	s.t.Helper()
	pid, _ := strconv.Atoi(s.show(unit, "MainPID")["MainPID"])
	return pid
}

// journal returns the log lines of a unit, or of systemd itself ("").
func (s *nsSystemd) journal(unit string) string {
	s.t.Helper()
	args := []string{"--no-pager", "-o", "cat"}
	if unit == "" {
		args = append(args, "_PID=1")
	} else {
		args = append(args, "-u", unit)
	}
	s.run("journalctl", "--sync")
	return s.must("journalctl", args...)
}

// hostMasks lists what the host's *.target.wants directories pull in
// (journald aside), and the units that must never run in a test namespace.
func hostMasks(t *testing.T) []string {
	set := map[string]bool{
		"systemd-remount-fs.service":         true,
		"systemd-tmpfiles-setup.service":     true,
		"systemd-tmpfiles-setup-dev.service": true,
		"systemd-tmpfiles-clean.service":     true,
		"systemd-tmpfiles-clean.timer":       true,
	}
	for _, pattern := range []string{"/lib/systemd/system/*.target.wants/*", "/usr/lib/systemd/system/*.target.wants/*", "/etc/systemd/system/*.target.wants/*"} {
		matches, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range matches {
			if name := filepath.Base(m); !strings.HasPrefix(name, "systemd-journald") {
				set[name] = true
			}
		}
	}
	var out []string
	for name := range set {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// childNamed returns the PID of a child of parent whose command is name, or 0.
func childNamed(parent int, name string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", parent, parent))
	if err != nil {
		return 0
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) == name {
			return pid
		}
	}
	return 0
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// exampleUnit returns a unit file of examples/systemd made to run bin with
// env instead of the example binary, and moltCLI for the molt command: its
// ExecStart= and the command of ExecReload= are replaced, the Environment=
// lines for the example binary (MOLT_EXAMPLE_*) and the [Install] section
// are dropped, and env is added at the end of [Service]. The rest, the
// control socket's RuntimeDirectory= and MOLT_SOCKET included, is kept.
func exampleUnit(t *testing.T, name, bin, moltCLI string, env []string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	replaced := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "[Install]") {
			break
		}
		switch {
		case strings.HasPrefix(line, "ExecStart="):
			line, replaced = "ExecStart="+bin, true
		case strings.HasPrefix(line, "ExecReload=/usr/local/bin/molt "):
			line = "ExecReload=" + moltCLI + strings.TrimPrefix(line, "ExecReload=/usr/local/bin/molt")
		case strings.HasPrefix(line, "Environment=") && strings.Contains(line, "MOLT_EXAMPLE_"):
			continue
		}
		out = append(out, line)
	}
	if !replaced {
		t.Fatalf("%s has no ExecStart=", name)
	}
	return strings.TrimRight(strings.Join(out, "\n"), "\n") + "\nEnvironment=" + strings.Join(env, " ") + "\n"
}

// buildMolt builds the molt command (cmd/molt) into dir for ExecReload=.
func buildMolt(t *testing.T, dir string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("%s=1 but go is not in PATH: the test builds cmd/molt for ExecReload=: %v", envSystemdTest, err)
	}
	out := filepath.Join(dir, "molt")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if b, err := exec.CommandContext(ctx, goTool, "build", "-o", out, "../cmd/molt").CombinedOutput(); err != nil {
		t.Fatalf("go build ../cmd/molt: %v\n%s", err, b)
	}
	return out
}

// copyFile copies the test binary where the units can start it.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// freePorts returns n loopback TCP ports free at the moment.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var lns []net.Listener
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// serviceEvents is the events file a service role writes.
type serviceEvents struct{ path string }

func (e serviceEvents) lines() []string {
	f, err := os.Open(e.path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// find returns the lines that start with kind and have every key=value.
func (e serviceEvents) find(kind string, kv ...string) []string {
	var out []string
next:
	for _, line := range e.lines() {
		if !strings.HasPrefix(line, kind+" ") {
			continue
		}
		for _, x := range kv {
			if !regexp.MustCompile(`(^| )` + regexp.QuoteMeta(x) + `( |$)`).MatchString(line) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// waitFor polls cond until it holds or the bound passes.
func waitFor(t *testing.T, what string, bound time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", bound, what)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded
	}
}
