//go:build unix

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/supervise"
	"golang.org/x/sys/unix"
)

const runUsage = `Usage: molt run [flags] -- PROGRAM [ARGS...]

Run PROGRAM (in any language) on sockets molt holds, and upgrade it without
dropping a connection: a new instance starts on the same sockets, and the old
one is stopped only once the new one is ready. The program gets the sockets
as systemd passes them (sd_listen_fds: LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID,
descriptors from 3) and a NOTIFY_SOCKET for READY=1.

Flags:
  --listen NAME=URL     a socket to create and pass: tcp://HOST:PORT, tcp4://, tcp6://
                        or unix:///PATH (repeatable); sockets systemd activated
                        molt with are passed first
  --ready URL           tell readiness by probing instead of READY=1:
                        http://HOST:PORT/PATH (a 2xx answer) or tcp://HOST:PORT;
                        host "instance" probes a private socket of each new
                        instance (named molt-ready), not the shared ones
  --grace D             how long a new instance may take to be ready (default 1m)
  --drain D             how long an old instance may take to exit after its stop
                        signal before its process group is killed (default 30s)
  --stop-signal SIG     the signal that stops an old instance (default SIGTERM)
  --control PATH        serve molt upgrade|stop|status on this socket
  --log-level LEVEL     debug, info, warn or error (default info)

Upgrade with: molt upgrade -s PATH, SIGHUP, or systemctl reload (ExecReload=molt
upgrade -s PATH, or Type=notify-reload). SIGTERM and SIGINT stop the program
(forwarded to it); SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded. molt run exits
with the program's status (128+N if signal N killed it).
`

// runConfig is the parsed command line of molt run.
type runConfig struct {
	opts     supervise.Options
	control  string
	logLevel slog.Level
}

type socketsFlag []supervise.Socket

func (s *socketsFlag) String() string { return fmt.Sprint(*s) }
func (s *socketsFlag) Set(v string) error {
	sk, err := supervise.ParseSocket(v)
	if err != nil {
		return err
	}
	*s = append(*s, sk)
	return nil
}

func parseRun(args []string) (runConfig, error) {
	var cfg runConfig
	fs := flag.NewFlagSet("molt run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var socks socketsFlag
	var ready, stopSig, level string
	fs.Var(&socks, "listen", "")
	fs.StringVar(&ready, "ready", "", "")
	fs.DurationVar(&cfg.opts.Grace, "grace", supervise.DefaultGrace, "")
	fs.DurationVar(&cfg.opts.Drain, "drain", supervise.DefaultDrain, "")
	fs.StringVar(&stopSig, "stop-signal", "SIGTERM", "")
	fs.StringVar(&cfg.control, "control", "", "")
	fs.StringVar(&level, "log-level", "info", "")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	prog := fs.Args()
	if len(prog) == 0 {
		return cfg, errors.New("run: no program: molt run [flags] -- PROGRAM [ARGS...]")
	}
	cfg.opts.Program, cfg.opts.Args = prog[0], prog[1:]
	cfg.opts.Sockets = socks
	cfg.opts.Activated = true
	if ready != "" {
		p, err := supervise.ParseProbe(ready)
		if err != nil {
			return cfg, err
		}
		cfg.opts.Ready = p
	}
	if cfg.opts.Grace <= 0 || cfg.opts.Drain <= 0 {
		return cfg, errors.New("run: --grace and --drain must be positive")
	}
	sig := unix.SignalNum(strings.ToUpper(stopSig))
	if sig == 0 && !strings.HasPrefix(strings.ToUpper(stopSig), "SIG") {
		sig = unix.SignalNum("SIG" + strings.ToUpper(stopSig))
	}
	if sig == 0 {
		return cfg, fmt.Errorf("run: --stop-signal %q: not a signal name", stopSig)
	}
	cfg.opts.StopSignal = sig
	if err := cfg.logLevel.UnmarshalText([]byte(level)); err != nil {
		return cfg, fmt.Errorf("run: --log-level: %v", err)
	}
	return cfg, nil
}

// forwarded are the signals molt run passes to the serving instance.
var forwarded = []os.Signal{syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// runSupervisor is the run command: it returns the exit status.
func runSupervisor(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseRun(args)
	if errors.Is(err, flag.ErrHelp) {
		io.WriteString(stdout, runUsage)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "molt: %v\nRun 'molt run -h' for usage.\n", err)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	cfg.opts.Logger = log

	// Before anything starts: no signal may be lost or kill molt.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT}, forwarded...)...)
	defer signal.Stop(sigs)

	sup, err := supervise.New(cfg.opts)
	if err != nil {
		fmt.Fprintf(stderr, "molt: run: %v\n", err)
		return exitFailed
	}
	defer sup.Close()
	if cfg.control != "" {
		ctl, err := control.ListenService(sup, cfg.control, control.Options{Logger: log})
		if err != nil {
			fmt.Fprintf(stderr, "molt: run: %v\n", err)
			return exitFailed
		}
		defer ctl.Close()
	}

	started := make(chan error, 1)
	go func() { started <- sup.Start(context.Background()) }()
	startReported := false
	reportStart := func(err error) {
		startReported = true
		if err != nil {
			fmt.Fprintf(stderr, "molt: run: %v\n", err)
		}
	}
	upgrades := make(chan struct{}, 1) // a token: one SIGHUP upgrade at a time
	upgrades <- struct{}{}
	for {
		select {
		case err := <-started:
			reportStart(err)
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				select {
				case <-upgrades:
					go func() {
						defer func() { upgrades <- struct{}{} }()
						ctx, cancel := context.WithTimeout(context.Background(), cfg.opts.Grace+10*time.Second)
						defer cancel()
						if _, err := sup.Upgrade(ctx, 0); err != nil {
							log.Warn("molt run: SIGHUP upgrade failed", "err", err)
						}
					}()
				default:
					log.Warn("molt run: SIGHUP ignored: an upgrade is in progress")
				}
			case syscall.SIGTERM, syscall.SIGINT:
				sup.StopWith(sig.(syscall.Signal))
			default:
				if err := sup.Signal(sig.(syscall.Signal)); err != nil {
					log.Warn("molt run: signal not forwarded", "signal", sig.String(), "err", err)
				}
			}
		case <-sup.Done():
			if !startReported {
				reportStart(<-started) // Start returns right after a failure stopped the supervisor
			}
			return sup.ExitCode()
		}
	}
}
