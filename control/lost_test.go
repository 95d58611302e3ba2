//go:build linux

package control_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/internal/proctest"
)

const (
	lostRequests = 10_000
	lostUpgrades = 50
)

// TestNoRequestLost sends 10,000 status requests to a service while it is
// upgraded 50 times, and counts those that got no reply. The clients keep
// connections open between requests, connect for each request, connect and
// only then (after a pause) send, or use Client. The upgrades are spread
// over the load: each waits until its share of the requests is answered.
// A generation that closes a connection it accepted, whose request had not
// arrived yet, loses that request; the connection must be handed to the
// successor, or the request answered, instead.
func TestNoRequestLost(t *testing.T) {
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	svc := startService(t, "service", sock)
	pid1, _ := strconv.Atoi(svc.ev.Wait(t, "ready")["pid"])
	serviceFDs := proctest.CountFDs(t, pid1, proctest.AllFDs)
	fds, goroutines := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs), runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()

	l := &lossCount{progress: make(chan struct{}, 1)}
	kinds := []struct {
		name    string
		workers int
		run     func(ctx context.Context, l *lossCount, sock string, rng *rand.Rand)
	}{
		{"keep-alive", 3, keepAliveClient(false)},
		{"keep-alive, idle between requests", 2, keepAliveClient(true)},
		{"connection per request", 2, perRequestClient(false)},
		{"connect, pause, send", 2, perRequestClient(true)},
		{"Client.Status", 2, statusClient},
	}
	var wg sync.WaitGroup
	for i, k := range kinds {
		for w := range k.workers {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(w)))
			wg.Go(func() { k.run(ctx, l, sock, rng) })
		}
	}

	c := &control.Client{Path: sock}
	upgraded := 0
	for i := 1; i <= lostUpgrades; i++ {
		if !l.await(ctx, int64(i*lostRequests/(lostUpgrades+1))) {
			t.Errorf("the load did not reach upgrade %d: %v", i, context.Cause(ctx))
			break
		}
		if _, err := c.Upgrade(ctx); err != nil {
			t.Errorf("upgrade %d: %v", i, err)
			continue
		}
		upgraded++
	}
	wg.Wait()
	elapsed := time.Since(start)

	t.Logf("%d requests, %d answered (%d of them \"replaced\": the client asks again), %d unanswered, across %d upgrades in %v",
		l.answered.Load()+l.lost.Load(), l.answered.Load(), l.replaced.Load(), l.lost.Load(), upgraded, elapsed.Round(time.Millisecond))
	if n := l.lost.Load(); n > 0 {
		t.Errorf("%d of %d requests got no reply; the first: %s", n, lostRequests, l.firstLoss())
	}
	if n := l.answered.Load() + l.lost.Load(); n != lostRequests {
		t.Errorf("%d requests were sent, want %d", n, lostRequests)
	}

	// Nothing left behind, in the last generation or here.
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Generation != uint64(1+upgraded) {
		t.Errorf("the last generation is %d, want %d", st.Generation, 1+upgraded)
	}
	proctest.CheckFDsAtMost(t, "at the end", st.PID, proctest.AllFDs, serviceFDs)
	proctest.CheckFDsAtMost(t, "at the end", os.Getpid(), proctest.AllFDs, fds)
	proctest.CheckGoroutines(t, "at the end", goroutines)
}

// lossCount counts the requests of TestNoRequestLost.
type lossCount struct {
	claimed, answered, replaced, lost atomic.Int64
	progress                          chan struct{} // a request ended

	mu    sync.Mutex
	first string // the first loss
}

// claim reserves a request; false when all are sent.
func (l *lossCount) claim() bool { return l.claimed.Add(1) <= lostRequests }

// ended counts a request that got code, or err instead.
func (l *lossCount) ended(kind string, code control.Code, err error) {
	switch {
	case err != nil:
		if l.lost.Add(1) == 1 {
			l.mu.Lock()
			l.first = fmt.Sprintf("%s: %v", kind, err)
			l.mu.Unlock()
		}
	case code == control.CodeReplaced:
		l.replaced.Add(1)
		fallthrough
	default:
		l.answered.Add(1)
	}
	select {
	case l.progress <- struct{}{}:
	default:
	}
}

func (l *lossCount) firstLoss() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first
}

// await waits until n requests have ended, or ctx ends.
func (l *lossCount) await(ctx context.Context, n int64) bool {
	for l.answered.Load()+l.lost.Load() < n {
		select {
		case <-l.progress:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

var statusLine = []byte(`{"v":1,"op":"status"}` + "\n")

// exchange sends a status request on c and reads the reply's code.
func exchange(c net.Conn, r *bufio.Reader) (control.Code, error) {
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := c.Write(statusLine); err != nil {
		return "", err
	}
	line, err := r.ReadBytes('\n')
	if err != nil {
		return "", fmt.Errorf("%w (read %q)", err, line)
	}
	var rep control.Reply
	if err := json.Unmarshal(line, &rep); err != nil {
		return "", fmt.Errorf("reply %q: %w", line, err)
	}
	return rep.Code, nil
}

// keepAliveClient sends its requests on one connection, for as long as it
// works. With idle, it pauses between requests (up to a millisecond, to
// shape the load: a connection idle as an upgrade ends).
func keepAliveClient(idle bool) func(context.Context, *lossCount, string, *rand.Rand) {
	return func(ctx context.Context, l *lossCount, sock string, rng *rand.Rand) {
		var c net.Conn
		var r *bufio.Reader
		defer func() {
			if c != nil {
				c.Close()
			}
		}()
		for ctx.Err() == nil && l.claim() {
			if c == nil {
				var err error
				if c, err = net.Dial("unix", sock); err != nil {
					l.ended("keep-alive dial", "", err)
					continue
				}
				r = bufio.NewReader(c)
			}
			code, err := exchange(c, r)
			l.ended("keep-alive", code, err)
			if err != nil {
				c.Close()
				c = nil
			}
			if idle {
				time.Sleep(time.Duration(rng.IntN(1000)) * time.Microsecond)
			}
		}
	}
}

// perRequestClient connects for each request; with pause, it waits up to
// half a millisecond between connecting and sending, so that a generation
// may accept the connection before its request arrives.
func perRequestClient(pause bool) func(context.Context, *lossCount, string, *rand.Rand) {
	return func(ctx context.Context, l *lossCount, sock string, rng *rand.Rand) {
		for ctx.Err() == nil && l.claim() {
			c, err := net.Dial("unix", sock)
			if err != nil {
				l.ended("dial", "", err)
				continue
			}
			if pause {
				time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
			}
			code, err := exchange(c, bufio.NewReader(c))
			c.Close()
			l.ended("connection per request", code, err)
		}
	}
}

// statusClient uses Client, which asks again after "replaced".
func statusClient(ctx context.Context, l *lossCount, sock string, _ *rand.Rand) {
	c := &control.Client{Path: sock}
	for ctx.Err() == nil && l.claim() {
		_, err := c.Status(ctx)
		l.ended("Client.Status", control.CodeOK, err)
	}
}
