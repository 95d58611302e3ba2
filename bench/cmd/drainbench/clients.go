package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moltgo/molt/bench/internal/h2count"
	"github.com/moltgo/molt/bench/internal/requests"
)

const (
	// requestTimeout bounds one short request, streamTimeout one
	// streaming request (about two seconds when all is well).
	requestTimeout = 10 * time.Second
	streamTimeout  = 15 * time.Second
	// maxPerWorker bounds the requests of one client goroutine.
	maxPerWorker = 10_000_000
)

// kind is one kind of client: how many goroutines, with which Transport,
// sending which request.
type kind struct {
	id      string // its name in -kinds
	name    string
	note    string // how it behaves, for the report
	workers int
	long    bool // its requests outlast an upgrade's window: no per-upgrade rate
	timeout time.Duration
	client  *http.Client
	do      func(ctx context.Context, c *http.Client, base string) error

	// counting: the kind is h2count's client, not Go's (client and do
	// are nil): h2c, or TLS (overTLS) verifying the server with tls;
	// counts is what it saw, once run's workers have returned.
	counting bool
	overTLS  bool
	tls      *tls.Config
	counts   h2count.Counts
}

// kindIDs are the -kinds names of every kind, in the order of the report.
var kindIDs = []string{"get", "post", "close", "h2", "h2raw", "h2tls", "stream"}

// serverAddrs are the addresses of the server under test: HTTP/1.1 and
// h2c, and HTTP/2 over TLS ("" if it has no TLS listener).
type serverAddrs struct{ plain, tls string }

// clientKinds returns the kinds of the benchmark named in ids that have
// workers (-streams 0 leaves the streaming kind out); the TLS kind
// verifies the server with tlsClient.
func clientKinds(clients, streams int, ids []string, tlsClient *tls.Config) []*kind {
	keepAlive := func(n int) *http.Client {
		return &http.Client{Transport: &http.Transport{
			MaxIdleConns:        2 * n,
			MaxIdleConnsPerHost: 2 * n,
			IdleConnTimeout:     time.Minute,
		}}
	}
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	all := []*kind{
		{
			id: "get", name: "keep-alive GET", workers: clients, timeout: requestTimeout, client: keepAlive(clients), do: requests.GetRoot,
			note: "HTTP/1.1, one shared keep-alive Transport; Go retries an idempotent request on a reused connection that failed before a response",
		},
		{
			id: "post", name: "keep-alive POST (no retry)", workers: clients, timeout: requestTimeout, client: keepAlive(clients), do: requests.PostNoRetry,
			note: "HTTP/1.1 keep-alive, 1 KB body without GetBody: Go's Transport retries no POST without an idempotency key, nor this one even when nothing was written",
		},
		{
			id: "close", name: "Connection: close", workers: clients, timeout: requestTimeout, do: requests.GetRoot,
			client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
			note:   "HTTP/1.1, a new TCP connection for every request",
		},
		{
			id: "h2", name: "HTTP/2 (h2c) POST", workers: clients, timeout: requestTimeout, client: &http.Client{Transport: h2}, do: postH2,
			note: "h2c with prior knowledge, all streams multiplexed by one Transport; 1 KB rewindable body (Go resends a request the server refused with GOAWAY)",
		},
		{
			id: "h2raw", name: "HTTP/2 (h2c) GET, counting", workers: clients, timeout: requestTimeout, counting: true,
			note: fmt.Sprintf("h2count, our own HTTP/2 client (golang.org/x/net/http2's Framer), h2c with prior knowledge, GET / on %s; it never resends a stream: "+
				"one above a GOAWAY's last stream id, reset, answered with a non-2xx status, on a connection that closed, or without a response in %v is a failure; "+
				"after a GOAWAY it opens no more streams on that connection, waits for the ones let through, and dials again (a failed dial is counted apart, as no stream was sent)",
				h2ShapeText(clients), requestTimeout),
		},
		{
			id: "h2tls", name: "HTTP/2 (TLS) GET, counting", workers: clients, timeout: requestTimeout, counting: true, overTLS: true, tls: tlsClient,
			note: fmt.Sprintf("h2count as in the h2c kind, over TLS (ALPN h2, the certificate verified) on the server's second listener, GET / on %s", h2ShapeText(clients)),
		},
		{
			id: "stream", name: "streaming (~2 s)", workers: streams, long: true, timeout: streamTimeout, client: keepAlive(streams), do: getStream,
			note: "HTTP/1.1 keep-alive, back-to-back GET /stream (20 chunks, 100 ms apart), whole body checked",
		},
	}
	var out []*kind
	for _, k := range all {
		if slices.Contains(ids, k.id) && k.workers > 0 {
			out = append(out, k)
		}
	}
	return out
}

// run starts k's workers; each sends requests back to back until stop is
// closed, maxPerWorker requests were sent or hardEnd passed, and records
// them in rec as kind i. Requests already sent when stop is closed finish
// (within their timeout); ctx ends them at once.
func (k *kind) run(ctx context.Context, wg *sync.WaitGroup, stop <-chan struct{}, hardEnd time.Time, srv serverAddrs, rec *recorder, i int) {
	if k.counting {
		k.runCounting(ctx, wg, stop, hardEnd, srv, rec, i)
		return
	}
	base := "http://" + srv.plain
	for range k.workers {
		wg.Go(func() {
			for range maxPerWorker {
				select {
				case <-stop:
					return
				default:
				}
				if time.Now().After(hardEnd) {
					return
				}
				var (
					conns atomic.Int32
					last  atomic.Pointer[httptrace.GotConnInfo]
				)
				rctx, cancel := context.WithTimeout(ctx, k.timeout)
				rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{
					GotConn: func(ci httptrace.GotConnInfo) { conns.Add(1); last.Store(&ci) },
				})
				start := time.Now()
				err := k.do(rctx, k.client, base)
				lat := time.Since(start)
				cancel()
				if err != nil {
					err = &requestError{err: err, conn: last.Load()}
				}
				rec.add(i, start, lat, max(int(conns.Load())-1, 0), err)
			}
		})
	}
}

// postH2: POST /echo over HTTP/2 with a rewindable body.
func postH2(ctx context.Context, c *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/echo", bytes.NewReader(requests.PostBody))
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err == nil && resp.ProtoMajor != 2 {
		resp.Body.Close()
		return fmt.Errorf("answered over %s, not HTTP/2", resp.Proto)
	}
	return requests.CheckEcho(resp, err)
}

// getStream: GET /stream, whose whole body must arrive.
func getStream(ctx context.Context, c *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/stream", nil)
	if err != nil {
		return err
	}
	body, err := requests.ReadBody(c.Do(req))
	if err != nil {
		return err
	}
	if body != streamBody {
		return fmt.Errorf("GET /stream: %d of %d bytes, ending %q", len(body), len(streamBody), body[max(0, len(body)-12):])
	}
	return nil
}

// requestError is a failed request with the connection it last used.
type requestError struct {
	err  error
	conn *httptrace.GotConnInfo // nil if it got none
}

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// detail describes the connection: which one, reused or new, and how long
// it had been idle.
func (e *requestError) detail() string {
	ci := e.conn
	if ci == nil {
		return "no connection"
	}
	s := fmt.Sprintf("connection %v → %v", ci.Conn.LocalAddr(), ci.Conn.RemoteAddr())
	switch {
	case ci.Reused && ci.WasIdle:
		s += fmt.Sprintf(", reused after %v idle", ci.IdleTime)
	case ci.Reused:
		s += ", reused"
	default:
		s += ", new"
	}
	return s
}
