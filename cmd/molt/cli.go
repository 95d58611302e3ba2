package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/moltgo/molt/control"
)

// Exit statuses (documented in the package comment).
const (
	exitOK              = 0
	exitFailed          = 1
	exitUsage           = 2
	exitInProgress      = 3
	exitUnreachable     = 4
	exitDenied          = 5
	exitNoReply         = 6
	exitGeneration      = 7
	exitTooManyDraining = 8
)

// envSocket names the environment variable with the default socket path.
const envSocket = "MOLT_SOCKET"

// Default timeouts: an upgrade waits for the successor (molt's own
// ReadyTimeout defaults to a minute), the other requests are answered at
// once.
const (
	defaultUpgradeTimeout = 5 * time.Minute
	defaultTimeout        = 10 * time.Second
)

const usage = `Usage: molt [flags] upgrade|check|stop|status
       molt [flags] takeover -- PROGRAM [ARGS...]
       molt run [flags] -- PROGRAM [ARGS...]

Drive a service built with molt through its control socket, or run a
program in any language under molt (see molt run -h).

Commands:
  upgrade   start a new generation of the service and wait for the result
  check     run the new binary's pre-flight check, without upgrading
  stop      stop the service gracefully (it drains, then exits)
  status    show the serving generation
  takeover  start PROGRAM, which takes over from the generation serving the takeover
            socket -s (its Options.TakeoverSocket), and wait until it serves

Flags (before or after the command):
  -s, --socket PATH   the control socket (default: $MOLT_SOCKET)
      --if-generation N
                      upgrade only if generation N serves (refused otherwise)
      --json          print the reply as JSON, for scripts
      --timeout D     give up waiting after D (default: 5m for upgrade and check, 10s otherwise)
  -h, --help          show this help

Exit status:
  0  success
  1  failed: the upgrade or the check failed (the service goes on serving), or the request was refused
  2  usage error
  3  an upgrade is already in progress; nothing was started
  4  unreachable: no service accepts on the socket
  5  permission denied
  6  no reply within the timeout, or the connection was lost: the outcome is unknown
  7  another generation than --if-generation's serves; nothing was started
  8  too many older generations still draining; nothing was started (upgrade again later)
`

// config is the parsed command line.
type config struct {
	op      control.Op // control.OpUpgrade, OpCheck, OpStop or OpStatus
	socket  string
	json    bool
	timeout time.Duration
	ifGen   uint64   // --if-generation; 0 when not given
	program []string // takeover: the program and its arguments, after "--"
}

// parse reads the command line. Flags may come before and after the
// command. It returns flag.ErrHelp for -h.
func parse(args []string, getenv func(string) string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("molt", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse reports errors; run prints them
	fs.StringVar(&cfg.socket, "s", "", "")
	fs.StringVar(&cfg.socket, "socket", "", "")
	fs.BoolVar(&cfg.json, "json", false, "")
	fs.DurationVar(&cfg.timeout, "timeout", 0, "")
	fs.Uint64Var(&cfg.ifGen, "if-generation", 0, "")
	if i := slices.Index(args, "--"); i >= 0 {
		args, cfg.program = args[:i], args[i+1:]
	}
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return cfg, err
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch {
	case len(rest) == 0:
		return cfg, errors.New("no command: want upgrade, check, stop, status or takeover")
	case len(rest) > 1:
		return cfg, fmt.Errorf("unexpected arguments after %s: %q", rest[0], rest[1:])
	}
	switch cfg.op = control.Op(rest[0]); cfg.op {
	case control.OpUpgrade, control.OpCheck, control.OpStop, control.OpStatus:
		if cfg.program != nil {
			return cfg, fmt.Errorf("%s takes no program after --", cfg.op)
		}
	case opTakeover:
		return parseTakeover(cfg)
	default:
		return cfg, fmt.Errorf("unknown command %q: want upgrade, check, stop, status or takeover", cfg.op)
	}
	ifGenSet := false
	fs.Visit(func(f *flag.Flag) { ifGenSet = ifGenSet || f.Name == "if-generation" })
	switch {
	case ifGenSet && cfg.op != control.OpUpgrade:
		return cfg, fmt.Errorf("--if-generation is for upgrade, not for %s", cfg.op)
	case ifGenSet && cfg.ifGen == 0:
		return cfg, errors.New("--if-generation 0: generations count from 1")
	}
	if cfg.socket == "" {
		cfg.socket = getenv(envSocket)
	}
	if cfg.socket == "" {
		return cfg, fmt.Errorf("no control socket: use -s PATH or set %s", envSocket)
	}
	switch {
	case cfg.timeout < 0:
		return cfg, fmt.Errorf("--timeout %v is negative", cfg.timeout)
	case cfg.timeout > 0:
	case cfg.op == control.OpUpgrade || cfg.op == control.OpCheck:
		cfg.timeout = defaultUpgradeTimeout
	default:
		cfg.timeout = defaultTimeout
	}
	return cfg, nil
}

// run is the command: it returns the exit status.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer, terminal bool) int {
	if len(args) > 0 && args[0] == "run" {
		return runSupervisor(args[1:], stdout, stderr)
	}
	cfg, err := parse(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		io.WriteString(stdout, usage)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "molt: %v\nRun 'molt -h' for usage.\n", err)
		return exitUsage
	}

	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	ctx, stopInterrupt := signal.NotifyContext(ctx, os.Interrupt)
	defer stopInterrupt()

	if cfg.op == opTakeover {
		return runTakeover(ctx, cfg, stdout, stderr)
	}
	var p *progress
	if terminal && !cfg.json {
		p = startProgress(stderr, cfg.op)
	}
	rep, err := (&control.Client{Path: cfg.socket}).DoRequest(ctx, control.Request{V: control.Version, Op: cfg.op, IfGeneration: cfg.ifGen})
	p.stop()

	if err != nil {
		code, status := classify(err)
		if cfg.json {
			writeJSON(stdout, errorReply{OK: false, Code: code, Op: cfg.op, Error: err.Error()})
		} else {
			printError(stderr, cfg, err)
		}
		return status
	}
	if cfg.json {
		writeJSON(stdout, rep)
	} else {
		printReply(stdout, stderr, rep, time.Now())
	}
	return replyStatus(rep.Code)
}

// errorReply is the --json output when the service gave no reply.
type errorReply struct {
	OK    bool       `json:"ok"`
	Code  string     `json:"code"`
	Op    control.Op `json:"op"`
	Error string     `json:"error"`
}

// classify maps an error without a reply to its JSON code and exit status.
func classify(err error) (string, int) {
	switch {
	case errors.Is(err, control.ErrPermissionDenied):
		return "permission_denied", exitDenied
	case errors.Is(err, control.ErrUnreachable):
		return "unreachable", exitUnreachable
	case errors.Is(err, control.ErrUnavailable):
		return "unavailable", exitUnreachable
	case errors.Is(err, control.ErrNoReply):
		return "no_reply", exitNoReply
	}
	return "protocol_error", exitFailed
}

// replyStatus maps a reply's code to the exit status.
func replyStatus(c control.Code) int {
	switch c {
	case control.CodeOK:
		return exitOK
	case control.CodeInProgress:
		return exitInProgress
	case control.CodeGenerationChanged:
		return exitGeneration
	case control.CodeCheckFailed:
		return exitFailed
	case control.CodeTooManyDraining:
		return exitTooManyDraining
	case control.CodePermissionDenied:
		return exitDenied
	}
	return exitFailed
}

func writeJSON(w io.Writer, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err) // replies always marshal
	}
	w.Write(append(b, '\n'))
}

// printError explains, for people, a request that got no reply.
func printError(w io.Writer, cfg config, err error) {
	msg := strings.TrimPrefix(err.Error(), "control: ")
	switch {
	case errors.Is(err, control.ErrNoReply) && errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(w, "molt: %s: no reply within %v: the outcome is unknown\n", cfg.op, cfg.timeout)
		if cfg.op == control.OpUpgrade {
			fmt.Fprintln(w, "molt: the upgrade may still be running; ask with: molt status")
		}
		return
	case errors.Is(err, control.ErrNoReply) && errors.Is(err, context.Canceled):
		fmt.Fprintf(w, "molt: %s: interrupted before the reply: the outcome is unknown\n", cfg.op)
		return
	}
	fmt.Fprintf(w, "molt: %s\n", msg)
	switch {
	case errors.Is(err, control.ErrUnreachable):
		fmt.Fprintf(w, "molt: is the service running, and is the socket path right (-s or %s)?\n", envSocket)
	case errors.Is(err, control.ErrPermissionDenied):
		fmt.Fprintln(w, "molt: run molt as the service's user or as root")
	}
}
