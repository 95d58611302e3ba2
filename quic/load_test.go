//go:build unix

package quic_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// The load: HTTP/3 clients that never retry. Each keeps one connection and
// sends requests on it one after the other, until the server's GOAWAY
// closes it; then it dials again (the next connection reaches the serving
// generation). Every request it sends is counted: answered, or failed with
// its error. A request quic-go refuses to send because a GOAWAY arrived
// first is not sent, and is counted apart (RFC 9114 §5.2 forbids sending
// it; nothing reached the server).

type loadResult struct {
	mu       sync.Mutex
	ok       int
	notSent  int            // refused by the client after a GOAWAY: never sent
	rejected int            // H3_REQUEST_REJECTED: sent, and rejected by a server in graceful shutdown
	failed   map[string]int // by error
	dials    int
	dialFail map[string]int
	byGen    map[uint64]int
	maxGen   uint64             // the newest generation that answered so far
	latency  [2][]time.Duration // of "/" requests: [0] on the newest generation, [1] on an older one (draining, forwarded to)
	newGen   *sync.Cond         // broadcast on every answer
}

func newLoadResult() *loadResult {
	r := &loadResult{failed: map[string]int{}, dialFail: map[string]int{}, byGen: map[uint64]int{}}
	r.newGen = sync.NewCond(&r.mu)
	return r
}

func (r *loadResult) failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.failed {
		n += c
	}
	for _, c := range r.dialFail {
		n += c
	}
	return n
}

func (r *loadResult) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	failed, dialFailed := 0, 0
	for _, n := range r.failed {
		failed += n
	}
	for _, n := range r.dialFail {
		dialFailed += n
	}
	fmt.Fprintf(&b, "answered %d, failed %d, rejected by GOAWAY %d, not sent after GOAWAY %d; dials %d, failed %d",
		r.ok, failed, r.rejected, r.notSent, r.dials, dialFailed)
	for _, m := range []map[string]int{r.failed, r.dialFail} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "\n  %d× %s", m[k], k)
		}
	}
	return b.String()
}

// latencies returns the median latency of "/" requests answered by the
// newest generation and by older ones, with their counts.
func (r *loadResult) latencies() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	med := func(d []time.Duration) time.Duration {
		if len(d) == 0 {
			return 0
		}
		d = slices.Clone(d)
		slices.Sort(d)
		return d[len(d)/2]
	}
	return fmt.Sprintf(`"/" p50 on the newest generation %v (%d), on older ones %v (%d)`,
		med(r.latency[0]), len(r.latency[0]), med(r.latency[1]), len(r.latency[1]))
}

// waitGen waits until n requests were answered by generation gen, or
// timeout; it reports whether they were.
func (r *loadResult) waitGen(gen uint64, n int, timeout time.Duration) bool {
	t := time.AfterFunc(timeout, func() { r.mu.Lock(); r.newGen.Broadcast(); r.mu.Unlock() })
	defer t.Stop()
	end := time.Now().Add(timeout)
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.byGen[gen] < n && time.Now().Before(end) {
		r.newGen.Wait()
	}
	return r.byGen[gen] >= n
}

func clientTLS() *tls.Config {
	// Every process makes its own certificate (testcert): the client
	// cannot know the server's, and verifying it is not what is tested.
	return &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}
}

// runLoad runs clients HTTP/3 clients against addr until stop is closed,
// each for at most maxRequests requests and until deadline, and returns
// when all have ended.
func runLoad(addr string, clients, maxRequests int, deadline time.Time, stop <-chan struct{}, r *loadResult) {
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { client(i, addr, maxRequests, deadline, stop, r) })
	}
	wg.Wait()
}

var paths = []string{"/", "/", "/slow", "/", "/stream", "/", "/"}

func client(id int, addr string, maxRequests int, deadline time.Time, stop <-chan struct{}, r *loadResult) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		r.mu.Lock()
		r.dialFail["client socket: "+err.Error()]++
		r.mu.Unlock()
		return
	}
	defer udp.Close()
	tr := &quicgo.Transport{Conn: udp}
	defer tr.Close()
	raddr, _ := net.ResolveUDPAddr("udp", addr)
	var (
		conn    *quicgo.Conn
		cc      *http3.ClientConn
		connGen uint64 // the generation that answered on conn last
	)
	defer func() {
		if conn != nil {
			conn.CloseWithError(0, "")
		}
	}()
	for n := 0; n < maxRequests && time.Now().Before(deadline); n++ {
		select {
		case <-stop:
			return
		default:
		}
		if conn != nil && conn.Context().Err() != nil {
			conn = nil // closed after a GOAWAY, once idle: dial the serving generation
		}
		if conn == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			conn, err = tr.Dial(ctx, raddr, clientTLS(), &quicgo.Config{MaxIdleTimeout: time.Minute, KeepAlivePeriod: time.Second})
			cancel()
			r.mu.Lock()
			r.dials++
			if err != nil {
				r.dialFail["dial: "+err.Error()]++
			}
			r.mu.Unlock()
			if err != nil {
				conn = nil
				continue
			}
			cc = (&http3.Transport{}).NewClientConn(conn)
			connGen = 0
		}
		path := paths[(id+n)%len(paths)]
		began := time.Now()
		gen, err := request(cc, "https://"+addr+path)
		took := time.Since(began)
		if err == nil {
			connGen = gen
		}
		r.mu.Lock()
		switch {
		case err == nil:
			r.ok++
			r.byGen[gen]++
			r.maxGen = max(r.maxGen, gen)
			if path == "/" {
				older := 0
				if gen < r.maxGen {
					older = 1
				}
				r.latency[older] = append(r.latency[older], took)
			}
			r.newGen.Broadcast()
		case strings.Contains(err.Error(), "connection in graceful shutdown"):
			r.notSent++ // quic-go's errGoAway: the request was not sent
		case strings.Contains(err.Error(), "H3_REQUEST_REJECTED"):
			r.rejected++
		default:
			r.failed[fmt.Sprintf("%s on %s: %v", path, connKind(connGen), err)]++
		}
		r.mu.Unlock()
		if err != nil {
			conn.CloseWithError(0, "")
			conn = nil
		}
	}
}

func connKind(gen uint64) string {
	if gen == 0 {
		return "a new connection"
	}
	return "a connection to generation " + strconv.FormatUint(gen, 10)
}

// request sends one GET and reads the whole answer, which must name the
// generation that served it.
func request(cc *http3.ClientConn, url string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	rsp, err := cc.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	defer rsp.Body.Close()
	b, err := io.ReadAll(rsp.Body)
	if err != nil {
		return 0, fmt.Errorf("reading the body: %w", err)
	}
	if rsp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", rsp.StatusCode)
	}
	s := string(b)
	i := strings.LastIndex(s, "gen=")
	if i < 0 {
		return 0, errors.New("answer names no generation")
	}
	g, err := strconv.ParseUint(strings.TrimSpace(s[i+4:]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("answer %q: %w", s, err)
	}
	return g, nil
}
