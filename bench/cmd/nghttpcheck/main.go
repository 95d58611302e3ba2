// Command nghttpcheck checks, with an HTTP/2 client from outside the
// project that never retries, that a molt service answers every request a
// client has sent while it upgrades: nghttp(1) from nghttp2, run as
// `nghttp -nv -m M URL`, one connection and M streams per process.
//
// Go's own HTTP/2 client cannot show this failure: it silently resends a
// stream above a GOAWAY's last stream id. nghttp does not, and prints
// every frame it sends and receives, so that each stream whose HEADERS
// reached the wire can be matched with its response.
//
// One binary plays two roles. As the server (environment variable
// NGHTTPCHECK_ROLE=server, set by the driver only) it is a molt service on
// molt's public API: molt.New, two listeners from Upgrader.Listen on
// loopback (one for HTTP/1.1 and h2c, one for TLS with ALPN h2 and a
// self-signed certificate the driver made), drain.HTTPServer, SIGHUP →
// Upgrade, Exit → Drain, SIGTERM → Stop and Drain. It answers GET / with
// its PID and prints one JSON line per event on the standard output it
// shares with the driver.
//
// As the driver (the default) it starts generation 1, then performs
// -upgrades upgrades. For each one it starts -conns nghttp processes per
// protocol of -proto (h2c: http://, tls: https://), waits until every one
// of them has received a complete response (read from its output, so the
// streams are flowing), sends SIGHUP to the serving generation, waits for
// the successor, for every nghttp to end (bounded by -run-timeout) and for
// the old generation to drain, exit 0 and be reaped. nghttp does not open
// a new connection after a GOAWAY, so each run lives through exactly one
// upgrade, and -m must be large enough that the drain's GOAWAY reaches the
// run before it has sent all its streams (a run without a GOAWAY fails:
// it checked nothing).
//
// From each run's output the driver counts the streams whose HEADERS
// frame was sent ("send HEADERS frame <..., stream_id=N>") and those that
// got a complete response (a received HEADERS or DATA frame with
// END_STREAM, flags 0x01), and lists every stream without one, with what
// is known of it: response headers without the end, a RST_STREAM and its
// code, a stream id above the GOAWAY's last stream id. It also reports
// responses whose status is not 200.
//
// nghttp's own account is checked too. It exits 0 even when it could not
// connect, so its standard error decides: after a GOAWAY it prints one
// "request HEADERS is not allowed" line per request it never sent and
// "Some requests were not processed. total=T, processed=P", where P counts
// complete responses; T must be -m, P the parser's answered count, and
// sent plus never sent T. Any other line on its standard error (but the
// TLS runs' warning about the self-signed certificate) is a failure.
//
// The exit status is 0 only if every stream sent was answered with 200,
// every nghttp ended as expected, every upgrade and drain succeeded and no
// process was left behind; 1 otherwise, 2 for bad flags, 3 if -timeout was
// reached. With -save, every run's standard output and error are written
// to DIR/upN/PROTO-I-pidPID.stdout and .stderr.
//
// Usage:
//
//	go run ./cmd/nghttpcheck [-upgrades 5] [-conns 3] [-m 20000] \
//	    [-proto h2c,tls] [-run-timeout 30s] [-timeout 110s] [-nghttp nghttp] [-save dir]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/moltgo/molt/internal/reap"
)

// startWait bounds the wait for every run's first response.
const startWait = 10 * time.Second

type config struct {
	takeover   bool
	upgrades   int
	conns      int
	streams    int
	protos     []string
	runTimeout time.Duration
	timeout    time.Duration
	nghttp     string
	save       string
}

func main() {
	if os.Getenv(envRole) == "server" {
		os.Exit(runServer())
	}
	var cfg config
	var protos string
	flag.IntVar(&cfg.upgrades, "upgrades", 5, "upgrades, one nghttp run per connection each")
	flag.IntVar(&cfg.conns, "conns", 3, "nghttp processes (one connection each) per protocol per upgrade")
	flag.IntVar(&cfg.streams, "m", 20000, "streams per nghttp run (nghttp -m)")
	flag.StringVar(&protos, "proto", "h2c,tls", "protocols, comma-separated: h2c (http://), tls (https://, ALPN h2)")
	flag.DurationVar(&cfg.runTimeout, "run-timeout", 30*time.Second, "bound on one upgrade's nghttp runs")
	flag.DurationVar(&cfg.timeout, "timeout", 110*time.Second, "bound on the whole check; every process is killed then")
	flag.StringVar(&cfg.nghttp, "nghttp", "nghttp", "the nghttp command")
	flag.BoolVar(&cfg.takeover, "takeover", false, "upgrade by takeovers: each generation is a new process that takes over through a takeover socket, not a SIGHUP")
	flag.StringVar(&cfg.save, "save", "", "directory to write every run's -v output into (created if missing)")
	flag.Parse()
	for p := range strings.SplitSeq(protos, ",") {
		if p != "h2c" && p != "tls" {
			fmt.Fprintf(os.Stderr, "nghttpcheck: -proto: %q is neither h2c nor tls\n", p)
			os.Exit(2)
		}
		if !slices.Contains(cfg.protos, p) {
			cfg.protos = append(cfg.protos, p)
		}
	}
	if flag.NArg() > 0 || cfg.upgrades < 1 || cfg.conns < 1 || cfg.streams < 1 || cfg.runTimeout <= 0 || cfg.timeout <= 0 {
		fmt.Fprintln(os.Stderr, "nghttpcheck: -upgrades, -conns, -m, -run-timeout and -timeout must be positive; no arguments")
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(runDriver(cfg))
}

// step is one upgrade and the runs that went through it.
type step struct {
	n        int
	runs     []*run
	verdicts []verdict
	problems [][]string // per run
	other    []string   // the upgrade's own problems
	took     time.Duration
}

func runDriver(cfg config) int {
	start := time.Now()
	path, err := exec.LookPath(cfg.nghttp)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nghttpcheck: %v (Debian: apt-get install nghttp2-client)\n", err)
		return 1
	}
	cfg.nghttp = path
	version, err := nghttpVersion(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nghttpcheck: %v\n", err)
		return 1
	}
	if cfg.save != "" {
		if err := os.MkdirAll(cfg.save, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "nghttpcheck: %v\n", err)
			return 1
		}
	}
	r, err := reap.New()
	if err != nil {
		fmt.Fprintf(os.Stderr, "nghttpcheck: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "nghttpcheck-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "nghttpcheck: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := writeCert(dir); err != nil {
		fmt.Fprintf(os.Stderr, "nghttpcheck: certificate: %v\n", err)
		return 1
	}
	// The last resort: whatever hangs, the check ends and leaves nothing.
	watchdog := time.AfterFunc(cfg.timeout, func() {
		fmt.Fprintf(os.Stderr, "nghttpcheck: -timeout %v reached; killing every process left\n", cfg.timeout)
		for _, p := range r.KillLeft(killGrace) {
			fmt.Fprintf(os.Stderr, "nghttpcheck: killed %s\n", p)
		}
		os.RemoveAll(dir)
		os.Exit(3)
	})
	defer watchdog.Stop()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Printf("nghttpcheck: %s; %d upgrades, %d nghttp run(s) per protocol (%s) per upgrade, -m %d\n",
		version, cfg.upgrades, cfg.conns, strings.Join(cfg.protos, ", "), cfg.streams)
	var problems []string
	var steps []*step
	takeover := ""
	if cfg.takeover {
		takeover = filepath.Join(dir, "takeover.sock")
	}
	svc, err := startService(ctx, r, dir, takeover)
	if err != nil {
		problems = append(problems, err.Error())
	} else {
		for n := 1; n <= cfg.upgrades; n++ {
			st := runStep(ctx, cfg, r, svc, n)
			steps = append(steps, st)
			printStep(st)
			if len(st.other) > 0 {
				break // the service is not in a state to go on
			}
		}
		problems = append(problems, svc.stop()...)
	}
	failed := report(steps, problems, time.Since(start))
	if failed {
		fmt.Fprintln(os.Stderr, "nghttpcheck: FAILED (see above)")
		return 1
	}
	return 0
}

// runStep performs upgrade n with its nghttp runs.
func runStep(ctx context.Context, cfg config, r *reap.Reaper, svc *service, n int) *step {
	st := &step{n: n}
	begin := time.Now()
	defer func() { st.took = time.Since(begin) }()
	save := ""
	if cfg.save != "" {
		save = fmt.Sprintf("%s/up%d", cfg.save, n)
		if err := os.MkdirAll(save, 0o755); err != nil {
			st.other = append(st.other, err.Error())
			return st
		}
	}
	for _, proto := range cfg.protos {
		url := "http://" + svc.cur.H2C + "/"
		if proto == "tls" {
			url = "https://" + svc.cur.TLS + "/"
		}
		for i := 1; i <= cfg.conns; i++ {
			ru, err := startRun(r, cfg.nghttp, proto, i, url, cfg.streams, save)
			if err != nil {
				st.other = append(st.other, err.Error())
				break
			}
			st.runs = append(st.runs, ru)
		}
	}
	runCtx, cancel := context.WithTimeout(ctx, cfg.runTimeout)
	defer cancel()
	// Then every run is under way: the upgrade meets streams in flight on
	// every connection.
	if len(st.other) == 0 {
		st.other = append(st.other, waitStarted(runCtx, st.runs)...)
	}
	var old serverEvent
	var pos int
	upgraded := false
	if len(st.other) == 0 {
		var err error
		old, pos, err = svc.upgrade(ctx)
		if err != nil {
			st.other = append(st.other, err.Error())
		} else {
			upgraded = true
		}
	}
	for _, ru := range st.runs {
		status, parseErr, err := ru.wait(runCtx, r)
		v := ru.log.judge()
		var p []string
		if err != nil {
			p = append(p, err.Error())
		}
		if parseErr != nil {
			p = append(p, "output: "+parseErr.Error())
		}
		if status != "" {
			p = append(p, ru.outcome(status, cfg.streams, v)...)
		}
		st.verdicts = append(st.verdicts, v)
		st.problems = append(st.problems, p)
	}
	if upgraded {
		if err := svc.waitExit(ctx, old, pos); err != nil {
			st.other = append(st.other, err.Error())
		}
	}
	return st
}

// waitStarted waits until every run has received a complete response.
func waitStarted(ctx context.Context, runs []*run) []string {
	wctx, cancel := context.WithTimeout(ctx, startWait)
	defer cancel()
	for _, ru := range runs {
		select {
		case <-ru.started:
		case err := <-ru.output:
			ru.output <- err // for wait
			return []string{fmt.Sprintf("nghttp %s ended before its first response", ru.name())}
		case <-wctx.Done():
			return []string{fmt.Sprintf("nghttp %s: no response within %v", ru.name(), startWait)}
		}
	}
	return nil
}

// nghttpVersion runs `nghttp --version`. It must run before reap.New:
// from then on the reaper reaps every child, and os/exec's Wait would not
// find this one.
func nghttpVersion(path string) (string, error) {
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", path, err)
	}
	return strings.TrimSpace(string(out)), nil
}
