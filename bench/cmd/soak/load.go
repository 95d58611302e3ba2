package main

import (
	"context"
	"net/http"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moltgo/molt/bench/internal/requests"
)

const (
	// requestTimeout bounds one request.
	requestTimeout = 10 * time.Second
	// maxPerWorker bounds the requests of one client goroutine.
	maxPerWorker = 100_000_000
	// maxErrTexts distinct error texts are kept per kind; the others are
	// only counted.
	maxErrTexts = 5
)

// kind is one kind of client.
type kind struct {
	name    string
	workers int
	client  *http.Client
	do      func(ctx context.Context, c *http.Client, base string) error

	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []errText // the first distinct ones
}

// errText is one distinct error of a kind of client.
type errText struct {
	text  string
	count int
	first string // the driver's position when it first happened
}

// load runs the clients against the service.
type load struct {
	kinds []*kind
	stop  chan struct{}
	wg    sync.WaitGroup
	where atomic.Pointer[string] // what the driver is doing, for error reports
}

// startLoad starts n client goroutines, spread round-robin over the three
// kinds, sending requests back to back to base until stop is called,
// maxPerWorker requests were sent or hardEnd passed.
func startLoad(ctx context.Context, base string, n int, hardEnd time.Time) *load {
	keepAlive := func() *http.Client {
		return &http.Client{Transport: &http.Transport{
			MaxIdleConns:        n,
			MaxIdleConnsPerHost: n,
			IdleConnTimeout:     time.Minute,
		}}
	}
	l := &load{
		kinds: []*kind{
			{name: "keep-alive GET", client: keepAlive(), do: requests.GetRoot},
			{name: "keep-alive POST (no retry)", client: keepAlive(), do: requests.PostNoRetry},
			{name: "Connection: close", do: requests.GetRoot,
				client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}},
		},
		stop: make(chan struct{}),
	}
	l.setWhere("warm-up")
	for i := range n {
		k := l.kinds[i%len(l.kinds)]
		k.workers++
		l.wg.Go(func() {
			for range maxPerWorker {
				select {
				case <-l.stop:
					return
				default:
				}
				if time.Now().After(hardEnd) {
					return
				}
				rctx, cancel := context.WithTimeout(ctx, requestTimeout)
				err := k.do(rctx, k.client, base)
				cancel()
				l.record(k, err)
			}
		})
	}
	return l
}

// setWhere records what the driver does now (an upgrade's number), to
// tell when a request failed.
func (l *load) setWhere(s string) { l.where.Store(&s) }

var addrPort = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+):\d+`)

func (l *load) record(k *kind, err error) {
	if err == nil {
		k.ok.Add(1)
		return
	}
	k.failed.Add(1)
	// Drop the client's port, so that one failure on different
	// connections reads the same.
	text := addrPort.ReplaceAllString(err.Error(), "$1:*")
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range k.errs {
		if k.errs[i].text == text {
			k.errs[i].count++
			return
		}
	}
	if len(k.errs) < maxErrTexts {
		k.errs = append(k.errs, errText{text: text, count: 1, first: *l.where.Load()})
	}
}

// finish stops the clients, waits for the requests in flight, and closes
// the idle connections so that the service can stop at once.
func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
	for _, k := range l.kinds {
		k.client.CloseIdleConnections()
	}
}

// totals returns the requests that succeeded and failed, over all kinds.
func (l *load) totals() (ok, failed int64) {
	for _, k := range l.kinds {
		ok += k.ok.Load()
		failed += k.failed.Load()
	}
	return ok, failed
}
