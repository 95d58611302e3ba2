//go:build unix

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/moltgo/molt/internal/proctest"
	"github.com/moltgo/molt/internal/runchild"
	"github.com/moltgo/molt/supervise"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/drain"
)

// The test binary plays both sides: the molt command ("cli", which runs
// run with its arguments) and services under molt. TestMain dispatches on
// envRole. Services report "event name k=v ..." lines on standard output
// and log JSON on standard error.
const (
	envRole     = "MOLT_CLI_TEST_ROLE"     // the role to play
	envNext     = "MOLT_CLI_TEST_NEXT"     // the role of a service's successors ("service" if unset)
	envSock     = "MOLT_CLI_TEST_SOCK"     // the control socket
	envMode     = "MOLT_CLI_TEST_MODE"     // the socket's mode, octal
	envRelease  = "MOLT_CLI_TEST_RELEASE"  // "held" waits until this file exists
	envConfig   = "MOLT_CLI_TEST_CONFIG"   // a file whose content "bad" fails the service's check
	envTakeSock = "MOLT_CLI_TEST_TAKEOVER" // molt.Options.TakeoverSocket
)

var roles = map[string]func() int{
	"cli":       func() int { return run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr, false) },
	"service":   func() int { return roleService(false) },
	"held":      func() int { return roleService(true) },
	"fail-init": roleFailInit,
}

func TestMain(m *testing.M) {
	supervise.ExecShim() // molt run's instances start through this binary
	runchild.Dispatch()  // and are this binary playing runchild
	proctest.Dispatch(envRole, roles)
	os.Exit(m.Run())
}

// roleService is an HTTP service under molt with a control socket. Held,
// it waits for the file named by envRelease before it calls Ready.
func roleService(held bool) int {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	upg, err := molt.New(molt.Options{
		Logger:         log,
		ReadyTimeout:   2 * time.Minute,
		Check:          checkConfig,
		TakeoverSocket: os.Getenv(envTakeSock),
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
		proctest.Say("error err=%q", err.Error())
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
		proctest.Say("error err=%q", err.Error())
		return 11
	}
	defer ctl.Close()
	ln, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		proctest.Say("error err=%q", err.Error())
		return 11
	}
	srv := drain.NewHTTPServer(&http.Server{Handler: http.NotFoundHandler()})
	go srv.Serve(ln)

	if held {
		proctest.Say("held pid=%d", os.Getpid())
		released := proctest.Until(proctest.Patience, func() bool {
			_, err := os.Stat(os.Getenv(envRelease))
			return err == nil
		})
		if !released {
			proctest.Say("error err=%q", "never released")
			return 13
		}
	}
	if err := upg.Ready(); err != nil {
		proctest.Say("error err=%q", err.Error())
		return 12
	}
	proctest.Say("ready pid=%d gen=%d", os.Getpid(), upg.Generation())
	<-upg.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv.Drain(ctx)
	proctest.Say("exiting pid=%d reason=%s", os.Getpid(), upg.Reason())
	return 0
}

// checkConfig is the service's pre-flight check: it reads envConfig's
// file, if there is one, and fails on "bad".
func checkConfig(context.Context) error {
	name := os.Getenv(envConfig)
	if name == "" {
		return nil
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	fmt.Printf("read %s\n", name)
	if string(b) == "bad" {
		return fmt.Errorf("%s: bad configuration", name)
	}
	return nil
}

func roleFailInit() int {
	if _, err := molt.New(molt.Options{}); err != nil {
		return 10
	}
	fmt.Fprintln(os.Stderr, "fail-init: configuration invalid")
	return 3
}

// service is a service started by a test, with its successors.
type service struct {
	ev     *proctest.Events
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
	s := &service{ev: proctest.NewEvents(outR), logs: &syncBuffer{}, exited: make(chan struct{})}
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
		s.ev.KillAll()
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
	ready := s.ev.Wait(t, "ready")
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
