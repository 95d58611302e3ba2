//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/drain"
)

// The test binary plays both sides: the molt command ("cli", which runs
// run with its arguments) and services under molt. TestMain dispatches on
// envRole. Services report "event name k=v ..." lines on standard output
// and log JSON on standard error.
const (
	envRole    = "MOLT_CLI_TEST_ROLE"    // the role to play
	envNext    = "MOLT_CLI_TEST_NEXT"    // the role of a service's successors ("service" if unset)
	envSock    = "MOLT_CLI_TEST_SOCK"    // the control socket
	envMode    = "MOLT_CLI_TEST_MODE"    // the socket's mode, octal
	envRelease = "MOLT_CLI_TEST_RELEASE" // "held" waits until this file exists
)

var roles = map[string]func() int{
	"cli":       func() int { return run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr, false) },
	"service":   func() int { return roleService(false) },
	"held":      func() int { return roleService(true) },
	"fail-init": roleFailInit,
}

func TestMain(m *testing.M) {
	if name := os.Getenv(envRole); name != "" {
		role, ok := roles[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown test role %q\n", name)
			os.Exit(2)
		}
		os.Exit(role())
	}
	os.Exit(m.Run())
}

func say(format string, args ...any) {
	fmt.Printf("event "+format+"\n", args...)
}

// roleService is an HTTP service under molt with a control socket. Held,
// it waits for the file named by envRelease before it calls Ready.
func roleService(held bool) int {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	upg, err := molt.New(molt.Options{
		Logger:       log,
		ReadyTimeout: 2 * time.Minute,
		Command: func(cmd *exec.Cmd) error {
			next := os.Getenv(envNext)
			if next == "" {
				next = "service"
			}
			cmd.Env = append(cmd.Env, envRole+"="+next)
			return nil
		},
	})
	if err != nil {
		say("error err=%q", err.Error())
		return 10
	}
	defer upg.Stop()
	defer control.HandleSignals(upg, control.SignalOptions{Logger: log})()
	opts := control.Options{Logger: log}
	if m, err := strconv.ParseUint(os.Getenv(envMode), 8, 32); err == nil {
		opts.Mode = os.FileMode(m)
	}
	ctl, err := control.Listen(upg, os.Getenv(envSock), opts)
	if err != nil {
		say("error err=%q", err.Error())
		return 11
	}
	defer ctl.Close()
	ln, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		say("error err=%q", err.Error())
		return 11
	}
	srv := drain.NewHTTPServer(&http.Server{Handler: http.NotFoundHandler()})
	go srv.Serve(ln)

	if held {
		say("held pid=%d", os.Getpid())
		for i := 0; ; i++ {
			if _, err := os.Stat(os.Getenv(envRelease)); err == nil {
				break
			}
			if i == 12000 {
				say("error err=%q", "never released")
				return 13
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := upg.Ready(); err != nil {
		say("error err=%q", err.Error())
		return 12
	}
	say("ready pid=%d gen=%d", os.Getpid(), upg.Generation())
	<-upg.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv.Drain(ctx)
	say("exiting pid=%d reason=%s", os.Getpid(), upg.Reason())
	return 0
}

func roleFailInit() int {
	if _, err := molt.New(molt.Options{}); err != nil {
		return 10
	}
	fmt.Fprintln(os.Stderr, "fail-init: configuration invalid")
	return 3
}

// events reads the event lines of service processes.
type events struct {
	lines   chan string
	backlog []string // read but not asked for yet; the test goroutine's
	mu      sync.Mutex
	pids    []int // every process that reported: killed at clean-up
}

func newEvents(r io.Reader) *events {
	ev := &events{lines: make(chan string, 256)}
	go func() { // ends when every writer has closed r
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "event ")
			if !ok {
				continue
			}
			if _, f := parseEvent(line); f["pid"] != "" {
				pid, _ := strconv.Atoi(f["pid"])
				ev.mu.Lock()
				ev.pids = append(ev.pids, pid)
				ev.mu.Unlock()
			}
			ev.lines <- line
		}
		close(ev.lines)
	}()
	return ev
}

// wait returns the fields of the first event called name not returned
// yet; events of other names are kept for later calls.
func (ev *events) wait(t *testing.T, name string) map[string]string {
	t.Helper()
	for i, line := range ev.backlog {
		if n, fields := parseEvent(line); n == name {
			ev.backlog = append(ev.backlog[:i], ev.backlog[i+1:]...)
			return fields
		}
	}
	deadline := time.NewTimer(2 * time.Minute)
	defer deadline.Stop()
	for {
		select {
		case line, ok := <-ev.lines:
			if !ok {
				t.Fatalf("no %q event: the services are gone (other events: %q)", name, ev.backlog)
			}
			if n, fields := parseEvent(line); n == name {
				return fields
			}
			ev.backlog = append(ev.backlog, line)
		case <-deadline.C:
			t.Fatalf("no %q event within 2 minutes (other events: %q)", name, ev.backlog)
		}
	}
}

func (ev *events) killAll() {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for _, pid := range ev.pids {
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// parseEvent splits `name k=v k2="quoted"` into the name and the fields.
func parseEvent(line string) (string, map[string]string) {
	name, rest, _ := strings.Cut(line, " ")
	m := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
		k, v, _ := strings.Cut(rest, "=")
		rest = ""
		if q, err := strconv.QuotedPrefix(v); err == nil {
			rest = v[len(q):]
			v, _ = strconv.Unquote(q)
		} else if i := strings.IndexByte(v, ' '); i >= 0 {
			v, rest = v[:i], v[i:]
		}
		m[k] = v
	}
	return name, m
}

// service is a service started by a test, with its successors.
type service struct {
	ev     *events
	logs   *syncBuffer // standard error of every generation
	pid    int         // generation 1
	exited chan struct{}
}

// startService starts the service as generation 1 on the control socket
// sock and waits until it is ready.
func startService(t *testing.T, sock string, env ...string) *service {
	t.Helper()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envRole+"=service", envSock+"="+sock)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = outW, errW
	s := &service{ev: newEvents(outR), logs: &syncBuffer{}, exited: make(chan struct{})}
	copied := make(chan struct{})
	go func() { io.Copy(s.logs, errR); close(copied) }() // ends when every generation is gone
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		t.Fatal(err)
	}
	s.pid = cmd.Process.Pid
	go func() { cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		s.ev.killAll()
		<-s.exited
		select {
		case <-copied:
		case <-time.After(time.Minute):
			t.Errorf("a generation of the service is still running a minute after the test")
		}
		outR.Close()
		errR.Close()
		if t.Failed() {
			t.Logf("service logs:\n%s", s.logs.String())
		}
	})
	ready := s.ev.wait(t, "ready")
	if ready["pid"] != strconv.Itoa(s.pid) || ready["gen"] != "1" {
		t.Fatalf("first ready event %v, want pid %d generation 1", ready, s.pid)
	}
	return s
}

// result is one run of the molt command.
type result struct {
	stdout, stderr string
	code           int
}

// cliCommand returns the molt command (this binary playing "cli") with
// args.
func cliCommand(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envRole+"=cli")
	return cmd
}

// moltCLI runs the molt command in a process of its own.
func moltCLI(t *testing.T, args ...string) result {
	t.Helper()
	return runCmd(t, cliCommand(args...))
}

func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	r, err := runCmdErr(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runCmdErr runs the molt command; it may be called from any goroutine.
func runCmdErr(cmd *exec.Cmd) (result, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Minute
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		return result{}, fmt.Errorf("molt %q: %w", cmd.Args[1:], err)
	}
	return result{stdout.String(), stderr.String(), code}, nil
}
