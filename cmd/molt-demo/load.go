package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// requestTimeout bounds every request, from dial to the end of the body.
	requestTimeout = 10 * time.Second
	// maxRequests bounds each client loop by count; in practice the loops
	// end with the load's duration.
	maxRequests = 10_000_000
	// maxErrors is how many distinct error messages a client kind keeps.
	maxErrors = 5
)

// kindStats counts the requests of one kind of client.
type kindStats struct {
	name       string
	ok, failed atomic.Int64
	abandoned  atomic.Int64 // in flight when the run was cut short: neither ok nor failed

	mu     sync.Mutex
	errs   []string       // distinct error messages, the first maxErrors
	errN   map[string]int // how often each of errs happened
	served map[int]int64  // requests answered by each server PID
}

func (k *kindStats) noteError(err error) {
	k.failed.Add(1)
	msg := err.Error()
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, seen := k.errN[msg]; seen || len(k.errs) < maxErrors {
		if !seen {
			k.errs = append(k.errs, msg)
		}
		k.errN[msg]++
	}
}

func (k *kindStats) addServed(pids map[int]int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for pid, n := range pids {
		k.served[pid] += n
	}
}

// load runs the clients: for each kind, a number of goroutines that send
// GET requests one after the other until the end time or until stopped.
type load struct {
	url   string
	start time.Time
	end   time.Time
	stop  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	kinds []*kindStats

	transports []*http.Transport

	mu      sync.Mutex
	stopped time.Time // when the last client finished its last request
}

// startLoad starts clients goroutines of each kind against url; they stop
// at end at the latest. Requests in flight when ctx ends (the run was
// interrupted or ran out of time) are abandoned.
func startLoad(ctx context.Context, url string, clients int, end time.Time) *load {
	l := &load{url: url, start: time.Now(), end: end, stop: make(chan struct{})}
	keepAlive := &http.Transport{
		Proxy:               nil, // never a proxy, whatever the environment says
		MaxIdleConns:        clients,
		MaxIdleConnsPerHost: clients,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	newConn := &http.Transport{
		Proxy:              nil,
		DisableKeepAlives:  true,
		DisableCompression: true,
	}
	l.transports = []*http.Transport{keepAlive, newConn}
	for _, kind := range []struct {
		name string
		tr   *http.Transport
	}{{"keep-alive", keepAlive}, {"new-connection", newConn}} {
		k := &kindStats{name: kind.name, errN: map[string]int{}, served: map[int]int64{}}
		l.kinds = append(l.kinds, k)
		client := &http.Client{Transport: kind.tr, Timeout: requestTimeout}
		for range clients {
			l.wg.Go(func() { l.client(ctx, k, client) })
		}
	}
	return l
}

// client sends requests one after the other. A request in flight when the
// load ends is not cancelled: it finishes (within requestTimeout) and
// counts. One in flight when ctx ends is cancelled and counted as abandoned.
func (l *load) client(ctx context.Context, k *kindStats, c *http.Client) {
	served := map[int]int64{}
	defer func() {
		k.addServed(served)
		now := time.Now()
		l.mu.Lock()
		if now.After(l.stopped) {
			l.stopped = now
		}
		l.mu.Unlock()
	}()
	for range maxRequests {
		select {
		case <-l.stop:
			return
		default:
		}
		if !time.Now().Before(l.end) {
			return
		}
		pid, err := get(ctx, c, l.url)
		if err != nil && ctx.Err() != nil {
			k.abandoned.Add(1)
			return
		}
		if err != nil {
			k.noteError(err)
			continue
		}
		k.ok.Add(1)
		served[pid]++
	}
}

// get sends one request and returns the PID that served it. It succeeds
// only on status 200 with a body of the form "pid P gen G".
func get(ctx context.Context, c *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	resp.Body.Close()
	if err != nil {
		return 0, fmt.Errorf("reading the body (status %s): %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %s: %q", resp.Status, body)
	}
	var (
		pid int
		gen uint64
	)
	if n, err := fmt.Sscanf(strings.TrimSpace(string(body)), "pid %d gen %d", &pid, &gen); n != 2 || err != nil || pid <= 0 || gen == 0 {
		return 0, fmt.Errorf("unexpected body %q", body)
	}
	return pid, nil
}

// finish stops the clients, waits for the requests in flight, and closes
// the idle keep-alive connections.
func (l *load) finish() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	for _, tr := range l.transports {
		tr.CloseIdleConnections()
	}
}

// took returns how long the load ran, from its start until the last client
// finished; call it after finish.
func (l *load) took() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopped.Sub(l.start)
}

// totals returns the requests that succeeded and failed so far.
func (l *load) totals() (ok, failed int64) {
	for _, k := range l.kinds {
		ok += k.ok.Load()
		failed += k.failed.Load()
	}
	return ok, failed
}
