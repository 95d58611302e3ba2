package grpcload

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Config sets the shape of the counting client's load.
type Config struct {
	Conns   int           // ClientConns, each with its own HTTP/2 connection
	Workers int           // goroutines per ClientConn, each with one RPC in flight
	Timeout time.Duration // each RPC's deadline: generous, so that a slow machine is not counted as a loss
	MaxRPCs int64         // stop starting RPCs after this many, whatever happens
	// DialOptions are added after the client's own: no WaitForReady, no
	// retry policy (grpc.WithDisableRetry), the attempt counter.
	DialOptions []grpc.DialOption
}

// Counts is what the counting client saw. Every RPC it started ends in
// exactly one of OK, NotServing or NonOK, so Started == Finished() after
// Stop.
type Counts struct {
	Started    int64                // Check calls made
	OK         int64                // status OK and the health status SERVING
	NotServing int64                // status OK but another health status
	NonOK      map[codes.Code]int64 // every other status, by code
	FirstErr   error                // the first non-OK status, for the report

	// Transparent counts grpc-go's transparent retries, from its stats
	// handler (the attempts it flags): an RPC whose stream the server
	// cannot have processed (picked on a transport that had just received
	// a GOAWAY, or refused by one) is retried even with retries disabled,
	// as gRPC's retry design allows. It shows how much of the result the
	// client did itself.
	Transparent int64
}

// Failed is the number of RPCs that did not end OK and SERVING.
func (c Counts) Failed() int64 {
	n := c.NotServing
	for _, v := range c.NonOK {
		n += v
	}
	return n
}

// Finished is the number of RPCs that ended, in any way.
func (c Counts) Finished() int64 { return c.OK + c.Failed() }

func (c Counts) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d RPCs started, %d finished: %d OK", c.Started, c.Finished(), c.OK)
	if c.NotServing > 0 {
		fmt.Fprintf(&b, ", %d not SERVING", c.NotServing)
	}
	for _, code := range slices.Sorted(maps.Keys(c.NonOK)) {
		fmt.Fprintf(&b, ", %d %v", c.NonOK[code], code)
	}
	fmt.Fprintf(&b, "; %d transparent retries by grpc-go", c.Transparent)
	if c.FirstErr != nil {
		fmt.Fprintf(&b, "; first error: %v", c.FirstErr)
	}
	return b.String()
}

// Load is a running counting client.
type Load struct {
	conns    []*grpc.ClientConn
	stop     chan struct{}
	wg       sync.WaitGroup
	progress chan struct{} // a token after an OK, for WaitOK
	attempts attemptCounter

	started, ok atomic.Int64
	mu          sync.Mutex // guards the rest
	notServing  int64
	nonOK       map[codes.Code]int64
	firstErr    error
}

// StartLoad starts cfg.Conns×cfg.Workers goroutines calling the health
// service's Check at addr back to back, each with one RPC in flight.
func StartLoad(addr string, cfg Config) (*Load, error) {
	l := &Load{
		stop:     make(chan struct{}),
		progress: make(chan struct{}, 1),
		nonOK:    map[codes.Code]int64{},
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDisableRetry(),
		grpc.WithStatsHandler(&l.attempts),
	}, cfg.DialOptions...)
	for range cfg.Conns {
		cc, err := grpc.NewClient(addr, opts...)
		if err != nil {
			l.closeConns()
			return nil, err
		}
		l.conns = append(l.conns, cc)
	}
	for _, cc := range l.conns {
		client := healthpb.NewHealthClient(cc)
		for range cfg.Workers {
			l.wg.Add(1)
			go l.work(client, cfg)
		}
	}
	return l, nil
}

func (l *Load) work(client healthpb.HealthClient, cfg Config) {
	defer l.wg.Done()
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		if l.started.Add(1) > cfg.MaxRPCs {
			l.started.Add(-1)
			return
		}
		// Not derived from stop: stopping the load must not cancel an RPC
		// in flight, which would count as a loss the server did not cause.
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		l.book(resp, err)
	}
}

func (l *Load) book(resp *healthpb.HealthCheckResponse, err error) {
	if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
		l.ok.Add(1)
		select {
		case l.progress <- struct{}{}:
		default: // a token is waiting already
		}
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.notServing++
		return
	}
	l.nonOK[status.Code(err)]++
	if l.firstErr == nil {
		l.firstErr = err
	}
}

// WaitOK waits until n more RPCs have ended OK than when it was called, so
// that a caller can let every generation serve some load before the next
// upgrade without guessing a time.
func (l *Load) WaitOK(ctx context.Context, n int64) error {
	target := l.ok.Load() + n
	for l.ok.Load() < target {
		select {
		case <-l.progress:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d more OK RPCs: %w", n-(target-l.ok.Load()), n, ctx.Err())
		}
	}
	return nil
}

// Stop stops starting RPCs, waits for those in flight and returns the
// counts.
func (l *Load) Stop() Counts {
	close(l.stop)
	l.wg.Wait()
	l.closeConns()
	l.mu.Lock()
	defer l.mu.Unlock()
	return Counts{
		Started:     l.started.Load(),
		OK:          l.ok.Load(),
		NotServing:  l.notServing,
		NonOK:       maps.Clone(l.nonOK),
		FirstErr:    l.firstErr,
		Transparent: l.attempts.transparent.Load(),
	}
}

func (l *Load) closeConns() {
	for _, cc := range l.conns {
		cc.Close()
	}
}

// attemptCounter is a grpc-go stats handler that counts transparent
// retries: grpc-go reports a Begin for each attempt and flags those. (The
// Begins themselves are not a count of attempts: for a retry of a unary
// RPC's first operation grpc-go reports a flagged Begin and then an
// unflagged one.)
type attemptCounter struct {
	transparent atomic.Int64
}

func (a *attemptCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return ctx
}

func (a *attemptCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if b, ok := s.(*stats.Begin); ok && b.Client && b.IsTransparentRetryAttempt {
		a.transparent.Add(1)
	}
}

func (a *attemptCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (a *attemptCounter) HandleConn(context.Context, stats.ConnStats) {}
