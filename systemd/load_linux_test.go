package systemd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// load is loopback HTTP load against the services under test: keep-alive
// clients and new-connection-per-request clients, each paced and bounded in
// count, that count successes, refused connections and other failures.
type load struct {
	ok, failed, refused atomic.Int64
	maxLatency          atomic.Int64 // nanoseconds
	stop                chan struct{}
	wg                  sync.WaitGroup

	mu   sync.Mutex
	errs []string // the first failures
	pids map[string]int
}

// loadStats is what a load saw.
type loadStats struct {
	OK, Failed, Refused int64
	MaxLatency          time.Duration
	Errors              []string
	PIDs                map[string]int // responses per "pid=N gen=G name=X"
}

func (s loadStats) String() string {
	return fmt.Sprintf("%d ok, %d failed, %d refused, max latency %v", s.OK, s.Failed, s.Refused, s.MaxLatency.Round(time.Millisecond))
}

const (
	loadInterval    = 2 * time.Millisecond // per client: at most 500 requests a second
	loadMaxRequests = 200_000              // per client
	loadTimeout     = 20 * time.Second     // per request
)

// startLoad starts keepAlive + closing clients per URL.
func startLoad(urls []string, keepAlive, closing int) *load {
	l := &load{stop: make(chan struct{}), pids: map[string]int{}}
	for _, u := range urls {
		for i := range keepAlive + closing {
			tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableKeepAlives: i >= keepAlive}
			c := &http.Client{Transport: tr, Timeout: loadTimeout}
			l.wg.Go(func() {
				defer tr.CloseIdleConnections()
				l.client(c, u)
			})
		}
	}
	return l
}

func (l *load) client(c *http.Client, url string) {
	t := time.NewTicker(loadInterval)
	defer t.Stop()
	for range loadMaxRequests {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		start := time.Now()
		who, err := get(c, url)
		lat := time.Since(start)
		for {
			m := l.maxLatency.Load()
			if int64(lat) <= m || l.maxLatency.CompareAndSwap(m, int64(lat)) {
				break
			}
		}
		switch {
		case err == nil:
			l.ok.Add(1)
			l.mu.Lock()
			l.pids[who]++
			l.mu.Unlock()
			continue
		case errors.Is(err, syscall.ECONNREFUSED):
			l.refused.Add(1)
		default:
			l.failed.Add(1)
		}
		l.mu.Lock()
		if len(l.errs) < 10 {
			l.errs = append(l.errs, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
		}
		l.mu.Unlock()
	}
}

// get fetches url and returns the first line of a good answer.
func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "pid=") {
		return "", fmt.Errorf("status %d, body %q", resp.StatusCode, body)
	}
	return strings.TrimSpace(string(body)), nil
}

// finish stops the clients and returns what they saw.
func (l *load) finish() loadStats {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return loadStats{
		OK: l.ok.Load(), Failed: l.failed.Load(), Refused: l.refused.Load(),
		MaxLatency: time.Duration(l.maxLatency.Load()),
		Errors:     l.errs, PIDs: l.pids,
	}
}

// slowRequests starts n requests of /slow that each take d on the server,
// and returns once every one has its response headers (the server accepted
// and is working on it). wait returns their errors once they are done.
func slowRequests(ctx context.Context, url string, n int, d time.Duration) (wait func() []error, err error) {
	accepted := make(chan error, n)
	results := make(chan error, n)
	for range n {
		go func() {
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/slow?ms=%d", url, d.Milliseconds()), nil)
			resp, err := c.Do(req)
			accepted <- err
			if err != nil {
				results <- err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err == nil && (resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "done pid=")) {
				err = fmt.Errorf("status %d, body %q", resp.StatusCode, body)
			}
			results <- err
		}()
	}
	for range n {
		if err := <-accepted; err != nil {
			return nil, err
		}
	}
	return func() []error {
		var errs []error
		for range n {
			if err := <-results; err != nil {
				errs = append(errs, err)
			}
		}
		return errs
	}, nil
}

// oneShotClient makes one request on a new connection.
func oneShotClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: loadTimeout}
}
