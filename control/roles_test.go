//go:build unix

package control_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moltgo/molt/internal/proctest"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/control"
)

// The test binary plays the services: TestMain dispatches on envRole to a
// role below. Roles report what they do as "event name k=v ..." lines on
// standard output and log (JSON) on standard error.
const (
	envRole  = "MOLT_CONTROL_TEST_ROLE"  // the role to play
	envNext  = "MOLT_CONTROL_TEST_NEXT"  // the role a service's successors play ("service" if unset)
	envSock  = "MOLT_CONTROL_TEST_SOCK"  // the control socket path
	envHold  = "MOLT_CONTROL_TEST_HOLD"  // "1": the drain waits for standard input to close
	envMode  = "MOLT_CONTROL_TEST_MODE"  // the socket's mode, octal
	envGroup = "MOLT_CONTROL_TEST_GROUP" // Options.Group
)

var roles = map[string]func() int{
	"service":   roleService,
	"fail-init": roleFailInit,
}

func TestMain(m *testing.M) {
	proctest.Dispatch(envRole, roles)
	os.Exit(m.Run())
}

// successorCommand makes a successor play envNext (or "service").
func successorCommand(cmd *exec.Cmd) error {
	next := os.Getenv(envNext)
	if next == "" {
		next = "service"
	}
	cmd.Env = append(cmd.Env, envRole+"="+next)
	return nil
}

// roleService is a service under molt with a control socket and signal
// handling: a second stop signal exits with status 7.
func roleService() int {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	upg, err := molt.New(molt.Options{Logger: log, ReadyTimeout: 60 * time.Second, Command: successorCommand,
		MaxDraining: -1}) // upgrades follow each other faster than drains end
	if err != nil {
		proctest.Say("error err=%q", err.Error())
		return 10
	}
	defer upg.Stop()
	stopSignals := control.HandleSignals(upg, control.SignalOptions{
		Logger: log,
		Force:  func(os.Signal) { proctest.Say("force pid=%d", os.Getpid()); os.Exit(7) },
	})
	defer stopSignals()
	var opts control.Options
	if m, err := strconv.ParseUint(os.Getenv(envMode), 8, 32); err == nil {
		opts.Mode = os.FileMode(m)
	}
	opts.Group = os.Getenv(envGroup)
	opts.Logger = log
	ctl, err := control.Listen(upg, os.Getenv(envSock), opts)
	if err != nil {
		proctest.Say("error err=%q", err.Error())
		return 11
	}
	defer ctl.Close()
	if err := upg.Ready(); err != nil {
		proctest.Say("error err=%q", err.Error())
		return 12
	}
	proctest.Say("ready pid=%d gen=%d", os.Getpid(), upg.Generation())
	<-upg.Exit()
	proctest.Say("exiting pid=%d reason=%s", os.Getpid(), upg.Reason())
	if os.Getenv(envHold) == "1" {
		io.Copy(io.Discard, os.Stdin) // a drain that does not finish
	}
	return 0
}

// roleFailInit gives up during its start, as a successor with a broken
// configuration would.
func roleFailInit() int {
	if _, err := molt.New(molt.Options{}); err != nil {
		return 10
	}
	fmt.Fprintln(os.Stderr, "fail-init: configuration invalid")
	return 3
}

// service is a role process started by a test, with its successors.
type service struct {
	cmd    *exec.Cmd
	ev     *proctest.Events
	stderr *syncBuffer   // what every generation wrote to standard error
	stdin  *os.File      // the write end of the first generation's standard input
	exited chan struct{} // closed when the first generation has exited
}

// startService starts role as generation 1 with the control socket sock.
// Every generation shares its standard output (events), standard error
// (logs) and standard input pipes.
func startService(t *testing.T, role, sock string, env ...string) *service {
	t.Helper()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envRole+"="+role, envSock+"="+sock)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	s := &service{cmd: cmd, ev: proctest.NewEvents(outR), stderr: &syncBuffer{}, stdin: inW, exited: make(chan struct{})}
	copied := make(chan struct{})
	go func() { io.Copy(s.stderr, errR); close(copied) }() // ends when every generation is gone
	err = cmd.Start()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		inW.Close()
		cmd.Process.Kill()
		s.ev.KillAll()
		<-s.exited
		select {
		case <-copied:
		case <-time.After(time.Minute):
			t.Errorf("a generation of the service still holds standard error after a minute")
		}
		outR.Close()
		errR.Close()
		if t.Failed() {
			t.Logf("service stderr:\n%s", s.stderr.String())
		}
	})
	return s
}

// wait waits (bounded) for the first generation to exit and returns its
// exit code.
func (s *service) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-s.exited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("service pid %d did not exit within 2 minutes", s.cmd.Process.Pid)
	}
	return s.cmd.ProcessState.ExitCode()
}

// syncBuffer is a bytes.Buffer for a writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

// client returns a Client for sock and a context bounded for tests.
func client(t *testing.T, sock string) (*control.Client, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return &control.Client{Path: sock}, ctx
}
