// Command soak upgrades a molt service again and again under load and
// checks that nothing accumulates: no request fails, and the serving
// process's descriptors, goroutines and resident memory are back at their
// baseline at the end. It prints the three series.
//
// Usage:
//
//	go run ./cmd/soak [-upgrades 1000] [-clients 8] [-fail-every 10] [-fail-run 5] \
//	    [-warmup 2s] [-settle 20ms] [-rows 24] [-timeout 0] [-out soak.md]
//
// CI runs it with -upgrades 50 (well under a minute); the default 1,000
// upgrades take a minute or two on two CPUs. The exit status is 0 if every
// check passed, 1 if one failed, 2 for bad flags and 3 if -timeout was
// reached.
//
// # Roles
//
// One binary plays two roles. As the server (environment variable
// SOAK_ROLE=server, set by the driver only; molt passes the environment on
// to every successor) it is an ordinary molt service: molt.New, a TCP
// listener on 127.0.0.1:0 kept across generations, drain.HTTPServer,
// SIGHUP → Upgrade, SIGTERM → Stop and drain, one JSON line per event on
// standard output, which every generation shares with the driver. Besides
// GET / and POST /echo for the load it answers GET /debug/soak with its own
// PID, generation, goroutines, open descriptors and RSS (see Measuring).
//
// As the driver (the default) it starts generation 1 and keeps -clients
// client goroutines sending requests back to back the whole time, spread
// over three kinds: keep-alive GET; keep-alive POST whose body Go's
// Transport cannot rewind, so it never retries one; and Connection: close.
// It then performs -upgrades consecutive upgrades. Each one: SIGHUP to the
// serving generation, wait for its successor's ready event, wait until the
// old generation has drained, exited 0 and been reaped, then -settle, then
// one sample of the new serving process.
//
// Every generation is a new process, so that series shows whether
// anything is passed down the chain, but a leak inside one process would
// never grow in it. After every -fail-every upgrades (0: never) the
// serving process is therefore also asked for -fail-run upgrades whose
// successor fails during init: it finds a flag file the driver created and
// exits 1 after molt.New, before Ready, as a service whose new
// configuration does not load would. The same process goes through all of
// them and is sampled after each one. Each must fail cleanly: the upgrade
// reports the successor's exit status 1, the successor said it failed on
// purpose and has been reaped when the upgrade returns, and the old process
// still serves (the sample is answered by it).
//
// # Measuring
//
// The server measures itself when asked, the same way every time:
//
//   - fds: its open descriptors (the entries of /proc/self/fd on Linux; a
//     fcntl scan up to RLIMIT_NOFILE elsewhere). Connected TCP sockets
//     (SO_TYPE, getsockname, SO_ACCEPTCONN) are counted apart; the series is
//     the rest: the listener, the hand-off channel, pipes, the runtime's.
//   - goroutines: one runtime.Stack dump of all goroutines. Those of
//     net/http's connections (conn.serve and its background read, found by
//     function or, not started yet, by creator) are counted apart; the
//     series is the rest.
//   - RSS: VmRSS of /proc/self/status ("n/a" where there is no /proc).
//
// Why connections are set apart: the load keeps a varying number of
// connections open (keep-alive ones are handed from generation to
// generation, Connection: close ones come and go, the sample is one), and
// each costs a descriptor and a goroutine or two. Totals would compare
// connection counts; the rest is what the process holds for itself, which
// is what a leak grows. It is also exact: each descriptor and each stack
// is classified in the same pass, not two counts taken at different
// instants. The connections are still shown (the conns column and the
// totals), and the report names what the baseline process holds and what
// the last one holds more or less, so a difference says what it is.
//
// Generations after the first hold one descriptor more than generation 1:
// their end of the hand-off channel to their parent, which molt keeps
// open until Stop although the parent has exited. It does not grow, and
// the tolerance allows it.
//
// -settle is part of the measurement, not a synchronisation: the old
// generation has been reaped (or the failed successor is gone) before it
// starts; it lets the goroutines that watched that process, which end on
// their own, finish, as they would for a sample taken any later.
//
// # Assertions
//
// The run passes only if:
//
//   - no request failed;
//   - every intended upgrade succeeded, and its old generation drained and
//     exited 0; every intended failure failed cleanly, as above;
//   - the serving process's fds and goroutines at the end equal the
//     baseline within ±2 (see tolerance), and its RSS at the end is at most
//     1.5 × the baseline (see rssFactor). The baseline is generation 1
//     after -warmup under load; the end is the last generation -warmup
//     after its predecessor exited, under the same load: two processes of
//     the same age, since RSS grows in a young process;
//   - across the processes that went through failed upgrades, the median
//     growth of fds and goroutines from before the first to after the last
//     failure is within ±2: a leak of one per failed upgrade grows every
//     run by -fail-run, a sample that catches something in passing only
//     one run;
//   - every process is gone at the end: the driver is a child subreaper on
//     Linux, and kills and reports anything left.
//
// -timeout bounds the whole run: no upgrade starts when only the time to
// stop is left, and when it is reached every process is killed and soak
// exits with status 3. Loops are bounded in count and time, and everything
// runs on loopback. molt needs Unix descriptor passing: on Windows soak
// only says that it is not supported.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"
)

const (
	// envRole selects the server role; envFailFile names the flag file
	// whose existence makes a successor fail during init. The driver sets
	// both for generation 1, and molt passes them on to every successor.
	envRole     = "SOAK_ROLE"
	envFailFile = "SOAK_FAIL_FILE"
)

// config is the driver's command line.
type config struct {
	upgrades  int
	clients   int
	failEvery int
	failRun   int
	warmup    time.Duration
	settle    time.Duration
	rows      int
	timeout   time.Duration
	out       string
	command   string // the command line, for the report
}

func main() {
	if runtime.GOOS == "windows" {
		fmt.Fprintln(os.Stderr, "soak: not supported on Windows: molt needs Unix descriptor passing (molt.New returns molt.ErrNotSupported)")
		os.Exit(1)
	}
	if os.Getenv(envRole) == "server" {
		os.Exit(runServer())
	}
	var cfg config
	flag.IntVar(&cfg.upgrades, "upgrades", 1000, "number of successful upgrades to perform")
	flag.IntVar(&cfg.clients, "clients", 8, "client goroutines, spread over keep-alive GET, keep-alive POST (no retry) and Connection: close")
	flag.IntVar(&cfg.failEvery, "fail-every", 10, "after every N upgrades, put the serving process through failed upgrades (0: none)")
	flag.IntVar(&cfg.failRun, "fail-run", 5, "failed upgrades in a row each time (successor exits 1 during init)")
	flag.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "load before the baseline sample (generation 1) and before the end sample (the last generation)")
	flag.DurationVar(&cfg.settle, "settle", 20*time.Millisecond, "pause before each sample, after the old generation or the failed successor is gone")
	flag.IntVar(&cfg.rows, "rows", 24, "about how many samples to print in the table (plus start, end, minima and maxima)")
	flag.DurationVar(&cfg.timeout, "timeout", 0, "hard bound on the whole run; 0 means 2m + 400ms per planned upgrade (failed ones included)")
	flag.StringVar(&cfg.out, "out", "", "also write the report as Markdown to this file")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "soak: unexpected arguments %q\n", flag.Args())
		flag.Usage()
		os.Exit(2)
	}
	if cfg.timeout == 0 {
		cfg.timeout = 2*time.Minute + time.Duration(cfg.plannedUpgrades())*400*time.Millisecond
	}
	if err := cfg.check(); err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(2)
	}
	cfg.command = "go run ./cmd/soak"
	for _, a := range os.Args[1:] {
		cfg.command += " " + a
	}
	os.Exit(runDriver(cfg))
}

func (c config) check() error {
	switch {
	case c.upgrades < 1 || c.upgrades > 100_000:
		return fmt.Errorf("-upgrades %d: must be between 1 and 100000", c.upgrades)
	case c.clients < 1 || c.clients > 1024:
		return fmt.Errorf("-clients %d: must be between 1 and 1024", c.clients)
	case c.failEvery < 0:
		return fmt.Errorf("-fail-every %d: must not be negative", c.failEvery)
	case c.failEvery > 0 && (c.failRun < 1 || c.failRun > 1000):
		return fmt.Errorf("-fail-run %d: must be between 1 and 1000", c.failRun)
	case c.warmup < 100*time.Millisecond || c.warmup > time.Minute:
		return fmt.Errorf("-warmup %v: must be between 100ms and 1m", c.warmup)
	case c.settle < 0 || c.settle > 10*time.Second:
		return fmt.Errorf("-settle %v: must be between 0 and 10s", c.settle)
	case c.rows < 1:
		return fmt.Errorf("-rows %d: must be at least 1", c.rows)
	case c.timeout < c.minTimeout():
		return fmt.Errorf("-timeout %v: must be at least %v", c.timeout, c.minTimeout())
	}
	return nil
}

// failedPlanned is the number of upgrades meant to fail.
func (c config) failedPlanned() int {
	if c.failEvery == 0 {
		return 0
	}
	return c.upgrades / c.failEvery * c.failRun
}

// plannedUpgrades counts every upgrade the driver will ask for.
func (c config) plannedUpgrades() int { return c.upgrades + c.failedPlanned() }
