// Command grpcload upgrades the example gRPC server many times under load
// and fails if any RPC ended with a status other than OK.
//
// The load is the counting client of internal/grpcload (-load builtin:
// grpc-go from this module's go.mod, no WaitForReady, retries disabled),
// or a load generator from outside the project run as a subprocess for
// the whole run: -load ghz (github.com/bojand/ghz) or -load fortio
// (fortio.org/fortio), found in PATH or given with -bin. The generator is
// stopped with SIGINT after the last upgrade and the statuses it counted
// are read from its report.
//
//	go run ./cmd/grpcload -upgrades 50
//	go run ./cmd/grpcload -upgrades 50 -load ghz
//
// Everything runs on the loopback interface; the run is bounded by
// -upgrades, -max-rpcs and -timeout.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moltgo/molt/examples/grpc/internal/grpcload"
	"google.golang.org/grpc"
)

type options struct {
	load     string
	bin      string
	server   string
	upgrades int
	conns    int
	workers  int
	pace     int64
	interval time.Duration
	maxRPCs  int64
	rpcTime  time.Duration
	timeout  time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.load, "load", "builtin", "the load: builtin (this module's counting client), ghz or fortio")
	flag.StringVar(&o.bin, "bin", "", "the generator's binary (default: -load's name in PATH)")
	flag.StringVar(&o.server, "server", "", "the example server's binary (default: built from this module)")
	flag.IntVar(&o.upgrades, "upgrades", 50, "upgrades to make under load")
	flag.IntVar(&o.conns, "conns", 4, "client connections")
	flag.IntVar(&o.workers, "workers", 4, "concurrent RPCs per connection")
	flag.Int64Var(&o.pace, "pace", 300, "builtin: OK RPCs each generation serves before the next upgrade")
	flag.DurationVar(&o.interval, "interval", 100*time.Millisecond, "ghz, fortio: time each generation serves before the next upgrade")
	flag.Int64Var(&o.maxRPCs, "max-rpcs", 50_000_000, "builtin: stop starting RPCs after this many")
	flag.DurationVar(&o.rpcTime, "rpc-timeout", 30*time.Second, "each RPC's deadline")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "the whole run's deadline")
	flag.Parse()
	failed, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcload:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

// result is what a load reports: the RPCs it counted, by final status
// ("OK" and gRPC's code names).
type result struct {
	client   string // what made the RPCs, with its version when known
	rpcs     int64
	byStatus map[string]int64
	detail   string
	// attempts is set when byStatus counts the end of each RPC's first
	// stream attempt rather than of the RPC: ghz reads statuses from
	// grpc-go's stats handler, and the grpc-go it is built with (v1.34.0)
	// reports there the first attempt's end even when a transparent retry
	// then succeeded. Such a run is judged by whether every RPC the
	// generator counted was answered by a server.
	attempts bool
}

func (r result) nonOK() int64 {
	n := r.rpcs - r.byStatus["OK"]
	return n
}

// load is a running load: stop ends it and returns what it counted.
type load struct {
	pace func() error
	stop func() (result, error)
}

func run(o options) (failed bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	tmp, err := os.MkdirTemp("", "grpcload")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(tmp)
	if o.server == "" {
		o.server = filepath.Join(tmp, "server")
		out, err := exec.CommandContext(ctx, "go", "build", "-o", o.server, "github.com/moltgo/molt/examples/grpc").CombinedOutput()
		if err != nil {
			return false, fmt.Errorf("building the server: %v\n%s", err, out)
		}
	}
	step := time.Until(deadline(ctx)) // each wait for one line, generous: the whole run's budget
	srv, err := grpcload.Start(o.server, step, "-addr", "127.0.0.1:0")
	if err != nil {
		return false, err
	}
	defer srv.Kill() // a no-op once Stop saw every generation exit

	var l load
	switch o.load {
	case "builtin":
		l, err = startBuiltin(ctx, srv.Addr, o)
	case "ghz", "fortio":
		l, err = startExternal(ctx, srv.Addr, o, tmp)
	default:
		err = fmt.Errorf("unknown -load %q", o.load)
	}
	if err != nil {
		return false, err
	}
	start := time.Now()
	upErr := grpcload.Upgrades(srv, o.upgrades, step, l.pace)
	res, loadErr := l.stop()
	elapsed := time.Since(start)
	served, stopErr := srv.Stop(step)
	if err := errors.Join(upErr, loadErr, stopErr); err != nil {
		return false, err
	}

	codes := slices.Sorted(maps.Keys(res.byStatus))
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%s=%d", c, res.byStatus[c]))
	}
	fmt.Printf("client: %s\n", res.client)
	fmt.Printf("upgrades: %d (%d generations) in %.1fs, %d connections × %d RPCs in flight\n",
		o.upgrades, srv.Generations(), elapsed.Seconds(), o.conns, o.workers)
	what := "non-OK"
	if res.attempts {
		what = "non-OK first attempts"
	}
	fmt.Printf("RPCs: %d, %s: %d (%s)\n", res.rpcs, what, res.nonOK(), strings.Join(parts, " "))
	fmt.Printf("server: %d unary RPCs answered, the fewest by one generation %d\n", served, srv.LeastServed())
	if res.detail != "" {
		fmt.Println(res.detail)
	}
	switch {
	case res.attempts:
		unanswered := max(res.rpcs-served, 0)
		fmt.Printf("%s counts first attempts: %d non-OK first attempts; RPCs it counted that no server answered: %d\n",
			o.load, res.nonOK(), unanswered)
		if unanswered > 0 {
			fmt.Println("FAIL: RPCs were not answered")
			return true, nil
		}
	case res.nonOK() != 0:
		fmt.Println("FAIL: RPCs ended with a status other than OK")
		return true, nil
	}
	switch {
	case res.rpcs == 0 || srv.LeastServed() <= 0:
		fmt.Println("FAIL: a generation served no RPCs: the load did not run through every upgrade")
		return true, nil
	}
	fmt.Println("PASS")
	return false, nil
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

func startBuiltin(ctx context.Context, addr string, o options) (load, error) {
	l, err := grpcload.StartLoad(addr, grpcload.Config{
		Conns: o.conns, Workers: o.workers, Timeout: o.rpcTime, MaxRPCs: o.maxRPCs,
	})
	if err != nil {
		return load{}, err
	}
	return load{
		pace: func() error { return l.WaitOK(ctx, o.pace) },
		stop: func() (result, error) {
			c := l.Stop()
			by := map[string]int64{"OK": c.OK}
			for code, n := range c.NonOK {
				by[code.String()] = n
			}
			if c.NotServing > 0 {
				by["OK-not-SERVING"] = c.NotServing
			}
			r := result{
				client:   "grpcload's counting client, grpc-go v" + grpc.Version + ", no WaitForReady, WithDisableRetry",
				rpcs:     c.Started,
				byStatus: by,
				detail:   c.String(),
			}
			if c.Started != c.Finished() {
				return r, fmt.Errorf("%d RPCs started but %d finished", c.Started, c.Finished())
			}
			return r, nil
		},
	}, nil
}

// startExternal runs ghz or fortio against addr until stop. Both are
// told to let the RPCs in flight at the stop finish (ghz's
// --duration-stop wait; fortio does so on SIGINT), so that ending the run
// is not counted as a loss.
func startExternal(ctx context.Context, addr string, o options, tmp string) (load, error) {
	bin := o.bin
	if bin == "" {
		bin = o.load
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return load{}, err
	}
	report := filepath.Join(tmp, o.load+".json")
	var args []string
	switch o.load {
	case "ghz":
		args = []string{"--insecure", "--call", "grpc.health.v1.Health.Check", "-d", "{}",
			"-c", strconv.Itoa(o.conns * o.workers), "--connections", strconv.Itoa(o.conns),
			"-z", "24h", "--duration-stop", "wait", "-t", o.rpcTime.String(),
			"-O", "json", "-o", report, addr}
	case "fortio":
		// -c is connections, -s streams (goroutines) on each; -t 0 runs
		// until SIGINT; -qps 0 is as fast as it goes.
		args = []string{"load", "-grpc", "-qps", "0", "-t", "0",
			"-c", strconv.Itoa(o.conns), "-s", strconv.Itoa(o.workers), "-json", report, addr}
	}
	cmd := exec.Command(path, args...)
	var stderr bytes.Buffer
	cmd.Stdout = io.Discard
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return load{}, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	version := moduleVersion(ctx, path)
	return load{
		// The generators do not say how far they got while running, so
		// each generation gets a fixed time; LeastServed checks afterwards
		// that every one of them served.
		pace: func() error {
			select {
			case err := <-exited:
				return fmt.Errorf("%s exited during the run: %v\n%s", o.load, err, tail(stderr.Bytes()))
			case <-time.After(o.interval):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		stop: func() (result, error) {
			cmd.Process.Signal(syscall.SIGINT)
			select {
			case err := <-exited:
				if err != nil {
					return result{}, fmt.Errorf("%s: %v\n%s", o.load, err, tail(stderr.Bytes()))
				}
			case <-ctx.Done():
				cmd.Process.Kill()
				return result{}, fmt.Errorf("%s did not stop: %w", o.load, ctx.Err())
			}
			var r result
			var err error
			if o.load == "ghz" {
				r, err = readGhz(report)
			} else {
				r, err = readFortio(report, stderr.Bytes())
			}
			r.client = o.load + " " + version
			return r, err
		},
	}, nil
}

// readGhz reads the counts from ghz's JSON report (-O json): every RPC's
// end is in statusCodeDistribution, by gRPC code name.
func readGhz(report string) (result, error) {
	b, err := os.ReadFile(report)
	if err != nil {
		return result{}, err
	}
	var rep struct {
		Count        int64            `json:"count"`
		EndReason    string           `json:"endReason"`
		Statuses     map[string]int64 `json:"statusCodeDistribution"`
		Errors       map[string]int64 `json:"errorDistribution"`
		AverageNanos int64            `json:"average"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return result{}, fmt.Errorf("ghz report: %v", err)
	}
	r := result{rpcs: rep.Count, byStatus: rep.Statuses, attempts: true}
	if r.byStatus == nil {
		r.byStatus = map[string]int64{}
	}
	var sum int64
	for _, n := range rep.Statuses {
		sum += n
	}
	var errs []string
	for _, e := range slices.Sorted(maps.Keys(rep.Errors)) {
		errs = append(errs, fmt.Sprintf("  %d× %s", rep.Errors[e], e))
	}
	r.detail = fmt.Sprintf("ghz: end reason %s, %d statuses counted, average latency %v", rep.EndReason, sum, time.Duration(rep.AverageNanos))
	if len(errs) > 0 {
		r.detail += "\nerrors:\n" + strings.Join(errs, "\n")
	}
	if sum != rep.Count {
		return r, fmt.Errorf("ghz counted %d RPCs but %d statuses", rep.Count, sum)
	}
	return r, nil
}

// fortioCode finds the gRPC code in the line fortio logs for each failed
// call ("Error making grpc call: rpc error: code = Unavailable desc = …").
var fortioCode = regexp.MustCompile(`Error making grpc call: rpc error: code = (\w+)`)

// readFortio reads fortio's JSON report (-json): RetCodes counts the
// health statuses of the calls that succeeded and "-1" for the calls that
// failed; the failed calls' codes are in its log, one line each.
func readFortio(report string, log []byte) (result, error) {
	b, err := os.ReadFile(report)
	if err != nil {
		return result{}, err
	}
	var rep struct {
		RetCodes          map[string]int64
		DurationHistogram struct{ Count int64 }
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return result{}, fmt.Errorf("fortio report: %v", err)
	}
	r := result{rpcs: rep.DurationHistogram.Count, byStatus: map[string]int64{}}
	var sum int64
	for k, n := range rep.RetCodes {
		sum += n
		switch k {
		case "SERVING":
			r.byStatus["OK"] += n
		case "-1":
			// broken down from the log below
		default:
			r.byStatus["OK-"+k] += n
		}
	}
	var logged int64
	sc := bufio.NewScanner(bytes.NewReader(log))
	for sc.Scan() {
		if m := fortioCode.FindSubmatch(sc.Bytes()); m != nil {
			r.byStatus[string(m[1])]++
			logged++
		}
	}
	if failed := rep.RetCodes["-1"]; failed != logged {
		r.byStatus["unknown"] += failed - logged
	}
	r.detail = fmt.Sprintf("fortio: RetCodes %v", rep.RetCodes)
	if sum != r.rpcs {
		return r, fmt.Errorf("fortio counted %d calls but %d results", r.rpcs, sum)
	}
	return r, nil
}

// moduleVersion names the main module and the grpc-go version a Go binary
// was built with, from its build information.
func moduleVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, "go", "version", "-m", bin).Output()
	if err != nil {
		return "(version unknown)"
	}
	var mod, grpc string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "mod":
			mod = f[2]
		case len(f) >= 3 && f[0] == "dep" && f[1] == "google.golang.org/grpc":
			grpc = f[2]
		}
	}
	return fmt.Sprintf("%s (grpc-go %s)", mod, grpc)
}

func tail(b []byte) []byte {
	if len(b) > 4000 {
		return b[len(b)-4000:]
	}
	return b
}
