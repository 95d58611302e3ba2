//go:build unix

package quic_test

import (
	"flag"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moltgo/molt/internal/proctest"
)

var upgrades = flag.Int("quic.upgrades", 50, "upgrades in TestHTTP3SurvivesUpgrades")

// service is generation 1 of the HTTP/3 server role and its event lines.
type service struct {
	t    *testing.T
	ev   *proctest.Events
	pw   *os.File // the event pipe's writing end, for the processes the test starts
	env  []string
	addr string
	pid  int
	gen  uint64
}

func startService(t *testing.T, forward bool, env ...string) *service {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	f := "0"
	if forward {
		f = "1"
	}
	s := &service{t: t, ev: proctest.NewEvents(pr), pw: pw,
		env: append([]string{envRole + "=server", envAddr + "=127.0.0.1:0", envForward + "=" + f, envDrain + "=20s",
			"GORACE=halt_on_error=1"}, env...)} // a race in any generation ends it, and fails the test
	t.Cleanup(s.ev.KillAll)
	s.start()
	if !s.takeovers() {
		pw.Close() // the later generations are generation 1's descendants, and hold it
	} else {
		t.Cleanup(func() { pw.Close() })
	}
	ready := s.ev.Wait(t, "ready")
	s.addr = ready["addr"]
	s.pid, _ = strconv.Atoi(ready["pid"])
	s.gen = 1
	return s
}

// start starts a process of the server role, with extra environment.
func (s *service) start(env ...string) {
	s.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), s.env...), env...)
	cmd.Stdout, cmd.Stderr = s.pw, os.Stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go cmd.Wait()
}

func (s *service) takeovers() bool {
	for _, e := range s.env {
		if strings.HasPrefix(e, envTakeover+"=") {
			return true
		}
	}
	return false
}

// takeover starts a process that takes the service over from the serving
// generation, through the takeover socket, and waits until it serves.
func (s *service) takeover() {
	s.t.Helper()
	s.start(envTake + "=1")
	ready := s.ev.Wait(s.t, "ready")
	s.pid, _ = strconv.Atoi(ready["pid"])
	s.gen++
	if g, _ := strconv.ParseUint(ready["gen"], 10, 64); g != s.gen {
		s.t.Fatalf("generation %d is ready, want %d", g, s.gen)
	}
}

// upgrade makes the serving generation upgrade, and waits for its successor.
func (s *service) upgrade() {
	s.t.Helper()
	if err := syscall.Kill(s.pid, syscall.SIGHUP); err != nil {
		s.t.Fatal(err)
	}
	ready := s.ev.Wait(s.t, "ready")
	s.pid, _ = strconv.Atoi(ready["pid"])
	s.gen++
	if g, _ := strconv.ParseUint(ready["gen"], 10, 64); g != s.gen {
		s.t.Fatalf("generation %d is ready, want %d", g, s.gen)
	}
}

// load starts the test load (16 HTTP/3 clients, at most 10 minutes) and
// waits until generation 1 has answered some of it; end stops the clients
// and waits for them.
func (s *service) load() (r *loadResult, end func()) {
	s.t.Helper()
	r = newLoadResult()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		runLoad(s.addr, 16, 1_000_000, time.Now().Add(10*time.Minute), stop, r)
	}()
	s.t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	})
	if !r.waitGen(s.gen, 50, proctest.Patience) {
		s.t.Fatalf("generation %d answered no load: %s", s.gen, r)
	}
	var once sync.Once
	return r, func() { once.Do(func() { close(stop); <-done }) }
}

// upgradesUnder upgrades n times; each new generation answers 30 requests
// of r's load before the next upgrade.
func (s *service) upgradesUnder(r *loadResult, n int) {
	s.t.Helper()
	for range n {
		s.upgrade()
		if !r.waitGen(s.gen, 30, proctest.Patience) {
			s.t.Fatalf("generation %d answered no load: %s", s.gen, r)
		}
	}
}

// stop ends the serving generation and collects every generation's exit;
// a generation that reports an error fails the test.
func (s *service) stop() []map[string]string {
	exits := s.exits()
	for _, e := range exits {
		if e["err"] != "" {
			s.t.Errorf("generation %s: %s", e["gen"], e["err"])
		}
	}
	return exits
}

// exits ends the serving generation and collects every generation's exit.
func (s *service) exits() []map[string]string {
	syscall.Kill(s.pid, syscall.SIGTERM)
	var exits []map[string]string
	for range s.gen {
		exits = append(exits, s.ev.Wait(s.t, "exited"))
	}
	return exits
}

func sum(exits []map[string]string, field string) (total uint64, most int) {
	for _, e := range exits {
		n, _ := strconv.ParseUint(e[field], 10, 64)
		total += n
		most = max(most, int(n))
	}
	return total, most
}

// TestHTTP3SurvivesUpgrades: HTTP/3 clients with long-lived connections
// and requests always in flight (fast ones, 150 ms ones, 1 s streams)
// through 50 upgrades: every request sent is answered, and every dial
// succeeds. Each generation drains with GOAWAY while its successor serves
// and forwards it its connections' datagrams.
func TestHTTP3SurvivesUpgrades(t *testing.T) {
	n := *upgrades
	if testing.Short() {
		n = 5
	}
	s := startService(t, true)
	r, endLoad := s.load()
	s.upgradesUnder(r, n)
	endLoad()
	exits := s.stop()
	t.Logf("%d upgrades: %s\n%s", n, r, r.latencies())
	if f := r.failures(); f != 0 {
		t.Errorf("%d requests or dials failed", f)
	}
	fwd, _ := sum(exits, "forwarded")
	from, _ := sum(exits, "from_successor")
	dropped, _ := sum(exits, "dropped")
	_, chain := sum(exits, "max_older")
	t.Logf("datagrams forwarded %d, received from a successor %d, dropped %d; most older generations forwarded to at once: %d",
		fwd, from, dropped, chain)
	if fwd == 0 || from == 0 {
		t.Errorf("no datagram was forwarded (%d) or received from a successor (%d): the test did not exercise forwarding", fwd, from)
	}
}

var (
	compare       = flag.Bool("quic.compare", false, "TestHTTP3Compare: the same load and upgrades with and without forwarding, for BENCHMARKS.md")
	plainUpgrades = flag.Int("quic.plain-upgrades", 10, "upgrades without forwarding in TestHTTP3Compare (each loses requests to timeouts, which slow the run)")
)

// TestHTTP3Compare runs TestHTTP3SurvivesUpgrades's load and upgrades twice
// in one run: with this package, and with molt's plain ListenPacket under
// quic-go (what a service got before it: the successor reads every
// datagram, and the old generation's connections are lost). It reports
// both; it fails only if forwarding failed a request.
func TestHTTP3Compare(t *testing.T) {
	if !*compare {
		t.Skip("run with -quic.compare")
	}
	for _, forward := range []bool{true, false} {
		n := *upgrades
		if !forward {
			n = *plainUpgrades
		}
		s := startService(t, forward)
		r, endLoad := s.load()
		s.upgradesUnder(r, n)
		endLoad()
		// Without forwarding, old generations' drains end at their
		// deadline: their clients' connections were lost, not closed.
		stuck := 0
		for _, e := range s.exits() {
			switch {
			case e["err"] == "":
			case !forward && strings.Contains(e["err"], "deadline exceeded"):
				stuck++
			default:
				t.Errorf("forwarding=%v: generation %s: %s", forward, e["gen"], e["err"])
			}
		}
		t.Logf("forwarding=%v, %d upgrades: %s\n%s; drains that ran to their deadline: %d", forward, n, r, r.latencies(), stuck)
		if forward && r.failures() != 0 {
			t.Errorf("with forwarding, %d requests or dials failed", r.failures())
		}
	}
}
