package main

import (
	"bytes"
	"errors"
	"flag"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/internal/proctest"
)

func TestParse(t *testing.T) {
	env := func(v string) func(string) string {
		return func(name string) string {
			if name == envSocket {
				return v
			}
			return ""
		}
	}
	tests := []struct {
		name string
		args []string
		env  string
		want config
		err  string // "" for success
	}{
		{name: "short flag first", args: []string{"-s", "/a.sock", "status"},
			want: config{op: "status", socket: "/a.sock", timeout: defaultTimeout}},
		{name: "long flags after", args: []string{"upgrade", "--socket", "/a.sock", "--json"},
			want: config{op: "upgrade", socket: "/a.sock", json: true, timeout: defaultUpgradeTimeout}},
		{name: "equals form and timeout", args: []string{"--socket=/a.sock", "stop", "--timeout=3s"},
			want: config{op: "stop", socket: "/a.sock", timeout: 3 * time.Second}},
		{name: "socket from the environment", args: []string{"status"}, env: "/env.sock",
			want: config{op: "status", socket: "/env.sock", timeout: defaultTimeout}},
		{name: "flag beats the environment", args: []string{"status", "-s", "/a.sock"}, env: "/env.sock",
			want: config{op: "status", socket: "/a.sock", timeout: defaultTimeout}},
		{name: "no socket", args: []string{"status"}, err: "no control socket"},
		{name: "no command", args: []string{"-s", "/a.sock"}, err: "no command"},
		{name: "unknown command", args: []string{"-s", "/a.sock", "restart"}, err: `unknown command "restart"`},
		{name: "two commands", args: []string{"-s", "/a.sock", "stop", "status"}, err: "unexpected arguments"},
		{name: "unknown flag", args: []string{"-x", "status"}, err: "not defined"},
		{name: "negative timeout", args: []string{"-s", "/a", "--timeout", "-1s", "status"}, err: "negative"},
		{name: "bad timeout", args: []string{"-s", "/a", "--timeout", "soon", "status"}, err: "invalid value"},
		{name: "takeover", args: []string{"-s", "/t.sock", "takeover", "--", "./svc", "-c", "x.conf"},
			want: config{op: opTakeover, socket: "/t.sock", timeout: defaultUpgradeTimeout, program: []string{"./svc", "-c", "x.conf"}}},
		{name: "takeover without program", args: []string{"-s", "/t.sock", "takeover"}, err: "no program"},
		{name: "takeover without socket", args: []string{"takeover", "--", "./svc"}, env: "/c.sock", err: "no takeover socket"},
		{name: "program after status", args: []string{"-s", "/a", "status", "--", "./svc"}, err: "takes no program"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(tc.args, env(tc.env))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parse(%q) = %+v, %v; want an error containing %q", tc.args, got, err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("parse(%q) = %+v, %v; want %+v", tc.args, got, err, tc.want)
			}
		})
	}
	for _, h := range []string{"-h", "--help"} {
		if _, err := parse([]string{h}, env("")); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("parse(%s) = %v, want flag.ErrHelp", h, err)
		}
	}
}

func TestRunUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, func(string) string { return "" }, &stdout, &stderr, false); code != exitOK || stdout.String() != usage {
		t.Errorf("molt --help: exit %d, stdout %q; want 0 and the usage", code, stdout.String())
	}
	stdout.Reset()
	if code := run([]string{"status"}, func(string) string { return "" }, &stdout, &stderr, false); code != exitUsage ||
		!strings.Contains(stderr.String(), "no control socket: use -s PATH or set MOLT_SOCKET") || stdout.Len() != 0 {
		t.Errorf("molt status without a socket: exit %d, stderr %q; want %d and a hint", code, stderr.String(), exitUsage)
	}
}

// TestRunNoReply runs against a socket that accepts connections (the
// kernel queues them) but never answers.
func TestRunNoReply(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tc := range []struct {
		args   []string
		stdout string
		stderr string
	}{
		{[]string{"-s", sock, "--timeout", "200ms", "upgrade"}, "",
			"molt: upgrade: no reply within 200ms: the outcome is unknown\nmolt: the upgrade may still be running; ask with: molt status\n"},
		{[]string{"-s", sock, "--timeout", "200ms", "--json", "status"},
			"{\n  \"ok\": false,\n  \"code\": \"no_reply\",\n  \"op\": \"status\",\n  \"error\": \"control: no reply: status: context deadline exceeded\"\n}\n", ""},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, func(string) string { return "" }, &stdout, &stderr, false)
		if code != exitNoReply || stdout.String() != tc.stdout || stderr.String() != tc.stderr {
			t.Errorf("molt %q: exit %d\nstdout %q\nstderr %q\nwant exit %d\nstdout %q\nstderr %q",
				tc.args, code, stdout.String(), stderr.String(), exitNoReply, tc.stdout, tc.stderr)
		}
	}
}

func TestPrintReply(t *testing.T) {
	defer func(l *time.Location) { location = l }(location)
	location = time.UTC
	started := time.Date(2026, 11, 24, 23, 50, 1, 0, time.UTC)
	now := started.Add(72 * time.Second)
	three := 3
	ok := &control.UpgradeResult{OK: true, PID: 4100, Generation: 2, SuccessorPID: 4242, Started: started, Duration: 48211003}
	failed := &control.UpgradeResult{PID: 4100, Generation: 2, SuccessorPID: 4243, Started: started, Duration: 12345678,
		Error: "molt: upgrade failed: successor pid 4243 failed during init: exit status 3", Reason: "exit status 3",
		Stage: "init", ExitStatus: "exit status 3", ExitCode: &three}
	status := &control.Status{PID: 4242, ParentPID: 4100, Generation: 3, State: "ready", Started: started,
		Uptime: 72*time.Second + 300*time.Millisecond, Upgrades: 2, FailedUpgrades: 1, LastUpgrade: ok,
		Listeners: []control.Listener{
			{Kind: "listener", Network: "tcp", Address: "[::]:8080", Inherited: true},
			{Kind: "listener", Network: "unix", Address: "/run/svc/control.sock", Inherited: true, Control: true},
			{Kind: "listener", Network: "tcp4", Address: "127.0.0.1:9090", Name: "admin"},
		}}
	tests := []struct {
		name           string
		rep            control.Reply
		stdout, stderr string
	}{{
		name:   "upgrade ok",
		rep:    control.Reply{Code: control.CodeOK, Op: "upgrade", PID: 4100, Generation: 2, Upgrade: ok},
		stdout: "upgraded: pid 4242 serves as generation 3 (took 48.2ms; pid 4100 drains and exits)\n",
	}, {
		name: "upgrade failed",
		rep:  control.Reply{Code: control.CodeFailed, Op: "upgrade", PID: 4100, Generation: 2, Error: failed.Error, Upgrade: failed},
		stderr: "molt: upgrade failed after 12.3ms: successor pid 4243 failed during init: exit status 3\n" +
			"molt: pid 4100 (generation 2) goes on serving\n",
	}, {
		name: "upgrade failed, reported by the successor",
		rep: control.Reply{Code: control.CodeFailed, Op: "upgrade", PID: 4100, Generation: 2, Upgrade: &control.UpgradeResult{
			PID: 4100, Generation: 2, SuccessorPID: 4243, Duration: 18100000, Stage: "init", ExitStatus: "exit status 1",
			Reason: "successor reported: successor called Stop before Ready"}},
		stderr: "molt: upgrade failed after 18.1ms: successor pid 4243 failed during init: successor reported: successor called Stop before Ready (exit status 1)\n" +
			"molt: pid 4100 (generation 2) goes on serving\n",
	}, {
		name: "upgrade failed, successor did not start",
		rep: control.Reply{Code: control.CodeFailed, Op: "upgrade", PID: 4100, Generation: 2, Upgrade: &control.UpgradeResult{
			PID: 4100, Generation: 2, Duration: 200000, Stage: "start", Reason: "molt: start /usr/local/bin/svc: permission denied"}},
		stderr: "molt: upgrade failed after 200µs: the successor did not start: molt: start /usr/local/bin/svc: permission denied\n" +
			"molt: pid 4100 (generation 2) goes on serving\n",
	}, {
		name:   "upgrade in progress",
		rep:    control.Reply{Code: control.CodeInProgress, Op: "upgrade", Error: "another upgrade is in progress (started 1.2s ago)"},
		stderr: "molt: upgrade not started: another upgrade is in progress (started 1.2s ago)\n",
	}, {
		name: "permission denied",
		rep:  control.Reply{Code: control.CodePermissionDenied, Op: "status", Error: "permission denied: peer uid 65534 is not allowed (only uid 0 and root)"},
		stderr: "molt: status: permission denied: peer uid 65534 is not allowed (only uid 0 and root)\n" +
			"molt: run molt as the service's user or as root\n",
	}, {
		name:   "stopping",
		rep:    control.Reply{Code: control.CodeStopping, Op: "upgrade", Error: "the service is stopping"},
		stderr: "molt: upgrade: the service is stopping (stopping)\n",
	}, {
		name:   "stop",
		rep:    control.Reply{Code: control.CodeOK, Op: "stop", PID: 4242, Generation: 3},
		stdout: "stopping: pid 4242 (generation 3) stops accepting, drains and exits\n",
	}, {
		name: "status",
		rep:  control.Reply{Code: control.CodeOK, Op: "status", PID: 4242, Generation: 3, Status: status},
		stdout: "" +
			"pid           4242\n" +
			"generation    3 (parent pid 4100)\n" +
			"state         ready\n" +
			"uptime        1m12s (since 2026-11-24 23:50:01 UTC)\n" +
			"upgrades      2 done, 1 failed\n" +
			"last upgrade  ok: pid 4242 took over from pid 4100 as generation 3 in 48.2ms, 1m12s ago\n" +
			"listeners     tcp   [::]:8080              inherited\n" +
			"              unix  /run/svc/control.sock  inherited  control\n" +
			"              tcp4  127.0.0.1:9090         new        name \"admin\"\n",
	}, {
		name: "status, generation 1, last upgrade failed",
		rep: control.Reply{Code: control.CodeOK, Op: "status", Status: &control.Status{PID: 4100, Generation: 1, State: "ready",
			Started: started, Uptime: 5 * time.Second, FailedUpgrades: 1, LastUpgrade: failed}},
		stdout: "" +
			"pid           4100\n" +
			"generation    1\n" +
			"state         ready\n" +
			"uptime        5s (since 2026-11-24 23:50:01 UTC)\n" +
			"upgrades      0 done, 1 failed\n" +
			"last upgrade  failed after 12.3ms, 1m12s ago: successor pid 4243 failed during init: exit status 3\n" +
			"listeners     none\n",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			printReply(&stdout, &stderr, &tc.rep, now)
			if stdout.String() != tc.stdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout.String(), tc.stdout)
			}
			if stderr.String() != tc.stderr {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr.String(), tc.stderr)
			}
		})
	}
}

func TestProgress(t *testing.T) {
	var out syncBuffer
	p := startProgress(&out, "upgrade")
	proctest.WaitUntil(t, "the progress line", func() bool { return strings.Contains(out.String(), "upgrading...") })
	p.stop()
	got := out.String()
	if !strings.HasPrefix(got, "\r") || !strings.Contains(got, "upgrading... ") || !strings.HasSuffix(got, "\r\033[K") {
		t.Errorf("progress wrote %q, want a rewritten upgrading line, erased at the end", got)
	}
	// A request that ends before progressDelay shows nothing. Whether it
	// did end that soon is measured, not assumed: on a loaded machine the
	// stop may come later, and then the line may rightly show.
	var quick syncBuffer
	begin := time.Now()
	startProgress(&quick, "status").stop()
	if time.Since(begin) < progressDelay && quick.String() != "" {
		t.Errorf("a quick request showed progress: %q", quick.String())
	}
	(*progress)(nil).stop() // no terminal: nothing to stop
}

// syncBuffer is a bytes.Buffer for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestExitStatus(t *testing.T) {
	for code, want := range map[control.Code]int{
		control.CodeOK:                exitOK,
		control.CodeFailed:            exitFailed,
		control.CodeInProgress:        exitInProgress,
		control.CodeTooManyDraining:   exitTooManyDraining,
		control.CodeGenerationChanged: exitGeneration,
		control.CodeCheckFailed:       exitFailed,
		control.CodePermissionDenied:  exitDenied,
		control.CodeStopping:          exitFailed,
		control.CodeBadVersion:        exitFailed,
	} {
		if got := replyStatus(code); got != want {
			t.Errorf("replyStatus(%s) = %d, want %d", code, got, want)
		}
	}
	for _, tc := range []struct {
		err  error
		code string
		want int
	}{
		{control.ErrUnreachable, "unreachable", exitUnreachable},
		{control.ErrPermissionDenied, "permission_denied", exitDenied},
		{control.ErrNoReply, "no_reply", exitNoReply},
		{control.ErrUnavailable, "unavailable", exitUnreachable},
		{control.ErrProtocol, "protocol_error", exitFailed},
	} {
		if code, got := classify(tc.err); code != tc.code || got != tc.want {
			t.Errorf("classify(%v) = %s, %d; want %s, %d", tc.err, code, got, tc.code, tc.want)
		}
	}
}
