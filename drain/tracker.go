package drain

import (
	"context"
	"net"
	"sync"
)

// Tracker drains a server that is not net/http: it counts the connections
// accepted through its listeners and, in [Tracker.Drain], stops accepting
// and waits until the application has closed every one of them.
//
//	tr := drain.NewTracker()
//	ln = tr.Listener(ln) // ln from molt's Upgrader
//	go serve(ln, tr.Draining())
//	<-upg.Exit()
//	tr.Drain(ctx) // handlers see Draining closed, finish and close
//
// A Tracker is safe for concurrent use. Its zero value is not usable; use
// [NewTracker].
type Tracker struct {
	draining chan struct{}
	// accepting counts Accept calls in progress; Drain waits for them, so
	// a connection accepted as the listener closed is still counted.
	accepting sync.WaitGroup

	mu        sync.Mutex // protects the fields below
	conns     map[*trackedConn]struct{}
	listeners []net.Listener
	isDrain   bool
	changed   chan struct{} // closed and replaced when a connection closes

	result outcome // of the first Drain call, which later calls return
}

// NewTracker returns a Tracker with no connections.
func NewTracker() *Tracker {
	return &Tracker{
		draining: make(chan struct{}),
		conns:    make(map[*trackedConn]struct{}),
		changed:  make(chan struct{}),
		result:   newOutcome(),
	}
}

// Listener returns ln wrapped so that every connection it accepts is
// tracked until closed. Drain closes it.
func (t *Tracker) Listener(ln net.Listener) net.Listener {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.listeners = append(t.listeners, ln)
	if t.isDrain {
		ln.Close()
	}
	return &trackedListener{Listener: ln, t: t}
}

// Draining returns a channel closed when Drain starts: handlers finish the
// exchange they are in, then close their connection.
func (t *Tracker) Draining() <-chan struct{} { return t.draining }

// Active returns the number of tracked connections not yet closed.
func (t *Tracker) Active() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// Drain closes the listeners (the sockets live on in the successor),
// closes [Tracker.Draining], and waits until every tracked connection was
// closed; then it returns nil. If ctx ends first it closes the remaining
// connections and returns ctx's error.
//
// Only the first call drains; ctx bounds that drain. Later calls,
// concurrent ones included, wait until it has finished and return its
// result, or their own ctx's error if that ends first.
func (t *Tracker) Drain(ctx context.Context) error {
	t.mu.Lock()
	if t.isDrain {
		t.mu.Unlock()
		return t.result.wait(ctx)
	}
	t.isDrain = true
	close(t.draining)
	for _, ln := range t.listeners {
		ln.Close()
	}
	t.mu.Unlock()
	err := t.drain(ctx)
	t.result.set(err)
	return err
}

// drain is the first Drain call's work, once the listeners are closed.
func (t *Tracker) drain(ctx context.Context) error {
	t.accepting.Wait()
	for {
		t.mu.Lock()
		left, changed := len(t.conns), t.changed
		t.mu.Unlock()
		if left == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.mu.Lock()
			rest := make([]*trackedConn, 0, len(t.conns))
			for c := range t.conns {
				rest = append(rest, c)
			}
			t.mu.Unlock()
			for _, c := range rest {
				c.Close()
			}
			return context.Cause(ctx)
		}
	}
}

type trackedListener struct {
	net.Listener
	t *Tracker
}

func (l *trackedListener) Accept() (net.Conn, error) {
	l.t.mu.Lock()
	if l.t.isDrain {
		l.t.mu.Unlock()
		return nil, net.ErrClosed
	}
	l.t.accepting.Add(1)
	l.t.mu.Unlock()
	defer l.t.accepting.Done()
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: l.t}
	l.t.mu.Lock()
	l.t.conns[tc] = struct{}{}
	l.t.mu.Unlock()
	return tc, nil
}

type trackedConn struct {
	net.Conn
	t    *Tracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		close(c.t.changed)
		c.t.changed = make(chan struct{})
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}
