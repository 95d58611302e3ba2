//go:build unix

package quic_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moltgo/molt/internal/proctest"
)

// TestOutsideClientThroughUpgrades: ngtcp2's HTTP/3 client (gtlsclient,
// Debian's ngtcp2-client) through upgrades. Each run opens one connection
// and sends ten requests on it at once, four of them 1 s streams, so that
// most connections outlive a hand-off; every request must be answered
// 200 and every stream end with H3_NO_ERROR. The client never resends.
// .ci/run installs it and sets MOLTQUIC_REQUIRE_OUTSIDE=1; elsewhere the
// test is skipped without it.
func TestOutsideClientThroughUpgrades(t *testing.T) {
	bin, err := exec.LookPath("gtlsclient")
	if err != nil {
		if os.Getenv("MOLTQUIC_REQUIRE_OUTSIDE") == "1" {
			t.Fatal("gtlsclient (ngtcp2-client) is required here:", err)
		}
		t.Skip("gtlsclient (ngtcp2-client) not installed")
	}
	n := 20
	if testing.Short() {
		n = 3
	}
	s := startService(t, true)
	host, port, _ := strings.Cut(s.addr, ":")

	var (
		mu       sync.Mutex
		runs     int
		answered int
		rejected int
		failures []string
	)
	const streams = 10
	statusRE := regexp.MustCompile(`^http: stream 0x[0-9a-f]+ \[:status: (\d+)\]`)
	closedRE := regexp.MustCompile(`^HTTP stream \d+ closed with error code (\d+)`)
	ended := make(chan struct{}, 1024) // a run ended
	run := func() {
		defer func() {
			select {
			case ended <- struct{}{}:
			default:
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		uris := []string{}
		for _, p := range []string{"/slow", "/stream"} {
			uris = append(uris, "https://"+s.addr+p)
		}
		cmd := exec.CommandContext(ctx, bin, append([]string{"--no-quic-dump", "--exit-on-all-streams-close",
			"--timeout=30s", "-n", fmt.Sprint(streams), host, port}, uris...)...)
		out, err := cmd.CombinedOutput()
		ok, rej, bad := 0, 0, []string{}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			line := sc.Text()
			if m := statusRE.FindStringSubmatch(line); m != nil {
				if m[1] == "200" {
					ok++
				} else {
					bad = append(bad, line)
				}
			}
			if m := closedRE.FindStringSubmatch(line); m != nil {
				switch m[1] {
				case "256": // H3_NO_ERROR
				case "267": // H3_REQUEST_REJECTED
					rej++
				default:
					bad = append(bad, line)
				}
			}
		}
		mu.Lock()
		defer mu.Unlock()
		runs++
		answered += ok
		rejected += rej
		if err != nil {
			bad = append(bad, "exit: "+err.Error())
		}
		if ok+rej != streams {
			bad = append(bad, fmt.Sprintf("%d of %d requests answered, %d rejected", ok, streams, rej))
		}
		if len(bad) > 0 {
			failures = append(failures, strings.Join(bad, "; "))
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for i := 0; i < 2000; i++ { // bounded: the upgrades end much sooner
				select {
				case <-stop:
					return
				default:
				}
				run()
			}
		})
	}
	for range n {
		for len(ended) > 0 {
			<-ended
		}
		s.upgrade()
		// two runs end after each hand-off: their connections span it
		for range 2 {
			select {
			case <-ended:
			case <-time.After(proctest.Patience):
				t.Fatal("no gtlsclient run ended after an upgrade")
			}
		}
	}
	close(stop)
	wg.Wait()
	s.stop()
	t.Logf("gtlsclient through %d upgrades: %d runs, %d requests answered, %d rejected by GOAWAY, %d runs failed",
		n, runs, answered, rejected, len(failures))
	for _, f := range failures {
		t.Errorf("gtlsclient: %s", f)
	}
}
