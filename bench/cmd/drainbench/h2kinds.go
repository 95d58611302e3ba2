package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/moltgo/molt/bench/internal/h2count"
	"github.com/moltgo/molt/internal/testcert"
)

// The environment that gives the servers a certificate: PEM files the
// driver wrote. With both set, every system also serves HTTP/2 over TLS
// on a second listener (its address in the ready event's tls_addr).
const (
	envTLSCert = "DRAINBENCH_TLS_CERT"
	envTLSKey  = "DRAINBENCH_TLS_KEY"
	// envTLSAddr is the second fixed address, for the systems that bind
	// anew in every process.
	envTLSAddr = "DRAINBENCH_TLS_ADDR"
)

// h2StopGrace is how long the streams of a counting client still open
// when the load stops get to end (then they count as aborted, not
// failed): as long as a request of the other kinds may take.
const h2StopGrace = requestTimeout

// serverTLS is the driver's certificate: files for the servers, a pool
// for the clients, which verify it.
type serverTLS struct {
	dir    string
	env    []string
	client *tls.Config
}

// newServerTLS writes the test certificate into a new temporary
// directory.
func newServerTLS() (*serverTLS, error) {
	c, err := testcert.Loopback()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "drainbench-tls-*")
	if err != nil {
		return nil, err
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, c.CertPEM, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := os.WriteFile(keyFile, c.KeyPEM, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &serverTLS{
		dir:    dir,
		env:    []string{envTLSCert + "=" + certFile, envTLSKey + "=" + keyFile},
		client: &tls.Config{RootCAs: c.Pool(), ServerName: "127.0.0.1"},
	}, nil
}

// close removes the files.
func (s *serverTLS) close() { os.RemoveAll(s.dir) }

// serverTLSConfig returns the servers' TLS configuration from the files
// the environment names, or nil if it names none.
func serverTLSConfig() (*tls.Config, error) {
	certFile, keyFile := os.Getenv(envTLSCert), os.Getenv(envTLSKey)
	if certFile == "" || keyFile == "" {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: %w", envTLSCert, envTLSKey, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: []string{"h2", "http/1.1"}}, nil
}

// h2Shape spreads n clients of a counting kind over connections: up to 8
// connections, the streams shared out among them.
func h2Shape(n int) (conns, streams int) {
	conns = max(1, min(8, n/4))
	return conns, (n + conns - 1) / conns
}

// h2ShapeText describes h2Shape(n).
func h2ShapeText(n int) string {
	conns, streams := h2Shape(n)
	return fmt.Sprintf("%d connections × up to %d concurrent streams", conns, streams)
}

// runCounting runs the counting HTTP/2 client of k (h2count) until stop
// is closed or hardEnd passed, and records every stream that ended in
// rec as kind i; streams still open at the stop get h2StopGrace, then
// count as aborted in k.counts only. ctx ends the run too.
func (k *kind) runCounting(ctx context.Context, wg *sync.WaitGroup, stop <-chan struct{}, hardEnd time.Time, srv serverAddrs, rec *recorder, i int) {
	addr, problem := srv.plain, ""
	if k.overTLS {
		addr = srv.tls
		switch {
		case k.tls == nil:
			problem = "no TLS configuration for the client"
		case addr == "":
			problem = "the server has no TLS listener"
		}
	}
	k.counts = h2count.Counts{}
	conns, streams := h2Shape(k.workers)
	wg.Go(func() {
		rctx, cancel := context.WithDeadline(ctx, hardEnd)
		defer cancel()
		go func() {
			select {
			case <-stop:
				cancel()
			case <-rctx.Done():
			}
		}()
		if problem != "" {
			k.counts.ByCause[h2count.Dial]++
			k.counts.First[h2count.Dial] = problem
			return
		}
		counts, err := h2count.Run(rctx, h2count.Config{
			Addr: addr, TLS: k.tls, Conns: conns, Streams: streams,
			Method: "GET", Path: "/",
			MaxStreams:    int64(maxPerWorker) * int64(k.workers),
			StreamTimeout: k.timeout, StopGrace: h2StopGrace,
			OnStream: func(r h2count.Result) {
				if r.Err == nil {
					rec.add(i, r.Start, r.Latency, 0, nil)
				} else {
					rec.add(i, r.Start, r.Latency, 0, r.Err)
				}
			},
		})
		if err != nil {
			k.counts.ByCause[h2count.Dial]++
			k.counts.First[h2count.Dial] = err.Error()
			return
		}
		k.counts = counts
	})
}

// countingSummary renders what a counting kind saw, for the report.
func countingSummary(c h2count.Counts) string {
	s := fmt.Sprintf("%d streams sent, %d answered, %d failed (%s), %d aborted at the stop, %d dial errors, %d connections, %d GOAWAYs read",
		c.Sent, c.Answered, c.Failed(), c.Causes(), c.Aborted(), c.DialErrors(), c.Conns, c.GoAways)
	if d := c.First[h2count.Dial]; d != "" {
		s += fmt.Sprintf("; first dial error: `%s`", normalizeErr(d))
	}
	if d := c.First[h2count.Aborted]; d != "" {
		s += fmt.Sprintf("; first aborted: %s", normalizeErr(d))
	}
	return s
}
