//go:build linux

package molt_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A bounded load generator and a prober for the fault-injection suite
// (faults_cases_test.go): a few clients of each kind hammer a service over
// loopback, each request with a timeout, every client bounded in requests
// and time, and every result kept for the classification of failures.

const (
	reqTimeout        = 20 * time.Second // one request, connect included
	maxReqsPerClient  = 20000            // bound of every load client
	maxLoadDuration   = 2 * time.Minute  // bound of the whole load
	probeEvery        = 20 * time.Millisecond
	maxProbes         = 5000
	loadProgressLimit = time.Minute // waiting for the load to make progress
)

// target is where the service listens: "tcp" and host:port, or "unix" and
// a socket path. Every connection is dialled anew from it, so a listening
// socket that disappeared shows as a refused (or missing-file) dial.
type target struct{ network, addr string }

func (tg target) url(path string) string {
	if tg.network == "unix" {
		return "http://unix" + path
	}
	return "http://" + tg.addr + path
}

// transport returns a client transport that dials tg; keepAlive false
// sends every request on a new connection (Connection: close).
func (tg target) transport(keepAlive bool) *http.Transport {
	d := &net.Dialer{}
	return &http.Transport{
		DisableKeepAlives:   !keepAlive,
		MaxIdleConnsPerHost: 1,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, tg.network, tg.addr)
		},
	}
}

// loadKind is one kind of load client.
type loadKind int

const (
	kindGET   loadKind = iota // keep-alive GET (Go's transport may retry it on a reused connection)
	kindPOST                  // keep-alive POST with a body that cannot be sent twice: never retried
	kindClose                 // GET with Connection: close: a new connection every time
	numKinds
	kindProbe // the prober's requests (not a load client)
)

func (k loadKind) String() string {
	switch k {
	case kindGET:
		return "keep-alive GET"
	case kindPOST:
		return "keep-alive POST (not retryable)"
	case kindClose:
		return "Connection: close GET"
	case kindProbe:
		return "probe"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// postBody is what every POST sends; the server answers with its length.
var postBody = strings.Repeat("molt-fault-load ", 16)

// oneShot is a request body net/http cannot rewind (none of the types
// NewRequest recognises, so the request has no GetBody): the transport
// never sends such a request twice, and a POST lost in a dying connection
// shows as a failure instead of being retried.
type oneShot struct{ r io.Reader }

func (o *oneShot) Read(p []byte) (int, error) { return o.r.Read(p) }

// reqResult is one request.
type reqResult struct {
	kind       loadKind
	start, end time.Time
	err        error
	pid        int  // the process that answered
	reused     bool // sent on a connection that had carried an earlier request
	connPID    int  // for a reused connection: the process that answered on it last
}

// doRequest sends one request of kind on tr and checks the answer: status
// 200 and "pid generation body-length" with the whole POST body counted.
// lastPID (owned by the caller) maps each keep-alive connection to the
// process that answered on it last.
func doRequest(tg target, tr *http.Transport, kind loadKind, lastPID map[net.Conn]int) reqResult {
	var (
		conn   net.Conn
		reused bool
	)
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		conn, reused = info.Conn, info.Reused
	}}
	ctx, cancel := context.WithTimeout(httptrace.WithClientTrace(context.Background(), trace), reqTimeout)
	defer cancel()
	var req *http.Request
	if kind == kindPOST {
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, tg.url("/"), &oneShot{strings.NewReader(postBody)})
		req.ContentLength = int64(len(postBody))
	} else {
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, tg.url("/"), nil)
	}
	r := reqResult{kind: kind, start: time.Now()}
	resp, err := tr.RoundTrip(req)
	if conn != nil && reused {
		r.reused, r.connPID = true, lastPID[conn]
	}
	if err == nil {
		var b []byte
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			r.pid, err = parseAnswer(resp.StatusCode, string(b), kind)
		}
		if conn != nil {
			if err == nil && !resp.Close && kind != kindClose && kind != kindProbe {
				lastPID[conn] = r.pid
			} else {
				delete(lastPID, conn)
			}
		}
	}
	r.err, r.end = err, time.Now()
	return r
}

// parseAnswer checks a response of the fault suite's servers.
func parseAnswer(status int, body string, kind loadKind) (int, error) {
	f := strings.Fields(body)
	if status != http.StatusOK || len(f) != 3 {
		return 0, fmt.Errorf("status %d, body %q", status, body)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, fmt.Errorf("body %q: %v", body, err)
	}
	want := "0"
	if kind == kindPOST {
		want = strconv.Itoa(len(postBody))
	}
	if f[2] != want {
		return pid, fmt.Errorf("server read %s body bytes, want %s", f[2], want)
	}
	return pid, nil
}

// faultLoad runs perKind clients of each kind against a target until
// finish, or until its bounds (maxReqsPerClient each, maxLoadDuration).
type faultLoad struct {
	tg         target
	maxReqs    int // bound of every client
	stop       chan struct{}
	stopOnce   sync.Once
	wg         sync.WaitGroup
	transports []*http.Transport
	clients    int

	mu      sync.Mutex
	changed chan struct{} // closed and replaced at every result
	res     loadStats
	fails   []reqResult
}

// loadStats counts results.
type loadStats struct {
	sent, ok int
	okKind   [numKinds]int
	okByPID  map[int]int
	answers  map[int]answerSpan // by the process that answered
}

// answerSpan is when a process answered: its first and its last answer
// (the time each request completed).
type answerSpan struct{ first, last time.Time }

// add extends s to an answer completed at end.
func (s answerSpan) add(end time.Time) answerSpan {
	if s.first.IsZero() || end.Before(s.first) {
		s.first = end
	}
	if end.After(s.last) {
		s.last = end
	}
	return s
}

func (s loadStats) clone() loadStats {
	c := s
	c.okByPID = maps.Clone(s.okByPID)
	c.answers = maps.Clone(s.answers)
	return c
}

func startFaultLoad(tg target, perKind int) *faultLoad {
	return startFaultLoadBounded(tg, perKind, maxReqsPerClient, maxLoadDuration)
}

// startFaultLoadBounded is startFaultLoad with other bounds: maxReqs
// requests per client, and maxDur for the whole load.
func startFaultLoadBounded(tg target, perKind, maxReqs int, maxDur time.Duration) *faultLoad {
	l := &faultLoad{tg: tg, stop: make(chan struct{}), changed: make(chan struct{}), maxReqs: maxReqs}
	l.res.okByPID, l.res.answers = map[int]int{}, map[int]answerSpan{}
	deadline := time.Now().Add(maxDur)
	for kind := range numKinds {
		for range perKind {
			tr := tg.transport(kind != kindClose)
			l.transports = append(l.transports, tr)
			l.clients++
			l.wg.Add(1)
			go l.client(kind, tr, deadline)
		}
	}
	return l
}

func (l *faultLoad) client(kind loadKind, tr *http.Transport, deadline time.Time) {
	defer l.wg.Done()
	lastPID := map[net.Conn]int{}
	for range l.maxReqs {
		select {
		case <-l.stop:
			return
		default:
		}
		if time.Now().After(deadline) {
			return
		}
		l.record(doRequest(l.tg, tr, kind, lastPID))
	}
}

func (l *faultLoad) record(r reqResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.res.sent++
	if r.err == nil {
		l.res.ok++
		l.res.okKind[r.kind]++
		l.res.okByPID[r.pid]++
		l.res.answers[r.pid] = l.res.answers[r.pid].add(r.end)
	} else {
		l.fails = append(l.fails, r)
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *faultLoad) snapshot() loadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.res.clone()
}

// waitFor waits until cond holds for the load's counts, failing the test
// if it does not within loadProgressLimit (the clients may have ended).
func (l *faultLoad) waitFor(t *testing.T, what string, cond func(loadStats) bool) {
	t.Helper()
	limit := time.NewTimer(loadProgressLimit)
	defer limit.Stop()
	for {
		l.mu.Lock()
		s, ch := l.res.clone(), l.changed
		l.mu.Unlock()
		if cond(s) {
			return
		}
		select {
		case <-ch:
		case <-limit.C:
			t.Fatalf("load: no %s within %v (sent %d, ok %d, by pid %v, failed %d)",
				what, loadProgressLimit, s.sent, s.ok, s.okByPID, len(l.fails))
		}
	}
}

// waitMore waits until every kind got n more answers than in since, and pid
// (if not 0) n more.
func (l *faultLoad) waitMore(t *testing.T, since loadStats, pid, n int) {
	t.Helper()
	l.waitFor(t, fmt.Sprintf("%d more answers of each kind (pid %d)", n, pid), func(s loadStats) bool {
		for k := range numKinds {
			if s.okKind[k] < since.okKind[k]+n {
				return false
			}
		}
		return pid == 0 || s.okByPID[pid] >= since.okByPID[pid]+n
	})
}

// finish stops the clients, waits for them and closes their idle
// connections. It returns the counts and every failed request.
func (l *faultLoad) finish() (loadStats, []reqResult) {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
	for _, tr := range l.transports {
		tr.CloseIdleConnections()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.res.clone(), append([]reqResult(nil), l.fails...)
}

// prober checks, every probeEvery, that a process serves: a new connection
// and a request must succeed.
type prober struct {
	tg       target
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	mu      sync.Mutex
	results []reqResult
}

func startProber(tg target) *prober {
	p := &prober{tg: tg, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(probeEvery)
		defer tick.Stop()
		for range maxProbes {
			r := probeOnce(tg)
			p.mu.Lock()
			p.results = append(p.results, r)
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// probeOnce sends one request on a new connection.
func probeOnce(tg target) reqResult {
	tr := tg.transport(false)
	defer tr.CloseIdleConnections()
	return doRequest(tg, tr, kindProbe, nil)
}

func (p *prober) finish() []reqResult {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]reqResult(nil), p.results...)
}

// lossClass classifies a failed request.
type lossClass int

const (
	lossNone     lossClass = iota
	lossInFlight           // in flight in the killed process when it died: unavoidable
	lossDeadConn           // sent later on a keep-alive connection the killed process owned: unavoidable
	lossRefused            // connection refused: the listening socket was gone (never allowed)
	lossOther              // anything else (never allowed)
)

// classify sorts a request's failure. killed is the process the test
// SIGKILLed (0 if none) and dead when its death was certain (it was
// reaped). A failure counts as lost with the killed process only if it is
// a connection's end (reset, EOF, broken pipe; not a timeout, not a
// refusal) and either its keep-alive connection had last been answered by
// the killed process, or it was a new connection opened before the
// process was dead (the only process that could have accepted it and then
// dropped it). The kernel closes a dead process's connections at once, so
// nothing else can be its fault.
func classify(r reqResult, killed int, dead time.Time) lossClass {
	switch {
	case r.err == nil:
		return lossNone
	case errors.Is(r.err, syscall.ECONNREFUSED) || errors.Is(r.err, os.ErrNotExist):
		return lossRefused
	case killed == 0 || isTimeoutErr(r.err):
		return lossOther
	case r.reused && r.connPID == killed && r.start.Before(dead):
		return lossInFlight
	case r.reused && r.connPID == killed:
		return lossDeadConn
	case !r.reused && r.start.Before(dead):
		return lossInFlight
	}
	return lossOther
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// lossCounts counts the failures of rs by class.
type lossCounts [lossOther + 1]int

func countLosses(rs []reqResult, killed int, dead time.Time) (lossCounts, []reqResult) {
	var c lossCounts
	var bad []reqResult
	for _, r := range rs {
		cl := classify(r, killed, dead)
		c[cl]++
		if cl == lossRefused || cl == lossOther {
			bad = append(bad, r)
		}
	}
	return c, bad
}

func describeFailures(rs []reqResult, max int) string {
	var b strings.Builder
	for i, r := range rs {
		if i == max {
			fmt.Fprintf(&b, "\n\t... and %d more", len(rs)-max)
			break
		}
		fmt.Fprintf(&b, "\n\t%s at %s (reused=%t conn-pid=%d): %v", r.kind, r.start.Format("15:04:05.000000"), r.reused, r.connPID, r.err)
	}
	return b.String()
}

// probeSummary: how many probes, how many succeeded, the longest interval
// between two successful answers and the slowest probe.
func probeSummary(rs []reqResult) (n, ok int, maxGap, slowest time.Duration) {
	var last time.Time
	for _, r := range rs {
		n++
		if r.err != nil {
			continue
		}
		ok++
		if !last.IsZero() && r.end.Sub(last) > maxGap {
			maxGap = r.end.Sub(last)
		}
		last = r.end
		slowest = max(slowest, r.end.Sub(r.start))
	}
	return n, ok, maxGap, slowest
}
