package molt

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// The state hand-off, both sides. The parent: Upgrade calls
// Options.SaveState before it starts the successor (a state too large
// fails the upgrade before any process exists), announces the state in
// HELLO, and sends it after the inventory, before the successor can say
// READY. The successor: the goroutine that receives the inventory then
// receives the state into one buffer (stateReceipt); InheritedState hands
// it to the application once, and Ready drops it if nobody took it. The
// state lives in memory only: it crosses in the hand-off channel, never
// through a file.

// MaxStateSize is the largest state, in bytes, [Options.SaveState] may
// return; a larger one fails the upgrade with [ErrStateTooLarge] before
// the successor is started. It is 64 MiB: far more than the state a
// service hands on (keys, counters, a few thousand cache entries), small
// enough for a successor to allocate at once, and a copy through a local
// socket that takes a small part of any ReadyTimeout. Larger state belongs
// in a file handed on with the inventory ([Upgrader.AddFile]; a memfd
// keeps it off the disk too).
const MaxStateSize = handoff.MaxState

// MaxStateVersionLen is the longest version string, in bytes,
// [Options.SaveState] may return; a longer one fails the upgrade with
// [ErrStateTooLarge].
const MaxStateVersionLen = handoff.MaxStateVersion

// StateVersionError is returned by [Upgrader.InheritedState] when the
// parent saved its state under another version than the one asked for. It
// matches [ErrStateVersion] with [errors.Is]. The state is still there: a
// successor that can read the older format calls InheritedState again
// with Saved; one that cannot starts fresh.
type StateVersionError struct {
	Saved string // the version the parent's SaveState returned
	Want  string // the version InheritedState was asked for
}

func (e *StateVersionError) Error() string {
	return fmt.Sprintf("molt: inherited state has version %q, this process reads %q", e.Saved, e.Want)
}

// Is reports whether target is [ErrStateVersion].
func (e *StateVersionError) Is(target error) bool { return target == ErrStateVersion }

// savedState is what SaveState returned for one upgrade.
type savedState struct {
	version string
	data    []byte
}

// saveState calls Options.SaveState, if set, with a context that ends at
// the upgrade's deadline, and checks its result against the limits. It
// returns nil if there is no SaveState.
func (u *Upgrader) saveState(ctx context.Context, deadline time.Time) (*savedState, error) {
	if u.opts.SaveState == nil {
		return nil, nil
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	start := time.Now()
	version, data, err := u.opts.SaveState(ctx)
	switch {
	case err != nil:
		return nil, fmt.Errorf("molt: SaveState: %w", err)
	case len(data) > MaxStateSize:
		return nil, fmt.Errorf("%w: SaveState returned %d bytes, more than MaxStateSize (%d)", ErrStateTooLarge, len(data), MaxStateSize)
	case len(version) > MaxStateVersionLen:
		return nil, fmt.Errorf("%w: SaveState returned a version of %d bytes, more than MaxStateVersionLen (%d)", ErrStateTooLarge, len(version), MaxStateVersionLen)
	}
	u.log.Info("molt: state saved", "state_version", version, "bytes", len(data), "duration", time.Since(start))
	return &savedState{version: version, data: data}, nil
}

// send writes the state to the successor, after the inventory.
func (st *savedState) send(c *handoff.Conn) error {
	if st == nil {
		return nil
	}
	return c.SendState(st.version, st.data)
}

// stateReceipt is a successor's side of the state: whether one comes,
// and, once it arrived, the state until the application takes it.
type stateReceipt struct {
	follows bool          // the parent's HELLO announced a state
	done    chan struct{} // closed when the state arrived or its transfer failed; at once if none follows
	once    sync.Once

	mu      sync.Mutex
	version string
	data    []byte
	err     error  // why the transfer failed
	gone    string // why data is no longer here; "" while it is
}

func newStateReceipt(follows bool) *stateReceipt {
	r := &stateReceipt{follows: follows, done: make(chan struct{})}
	if !follows {
		r.once.Do(func() { close(r.done) })
	}
	return r
}

// receive reads the state the parent announced, if it did, under the
// hand-off's deadline.
func (r *stateReceipt) receive(c *handoff.Conn, u *Upgrader) error {
	if !r.follows {
		return nil
	}
	start := time.Now()
	version, data, err := c.RecvState()
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	r.mu.Lock()
	r.version, r.data = version, data
	r.mu.Unlock()
	r.once.Do(func() { close(r.done) })
	u.log.Info("molt: state received", "state_version", version, "bytes", len(data), "duration", time.Since(start))
	return nil
}

// end records how the hand-off ended, for a state that did not arrive.
func (r *stateReceipt) end(err error) {
	r.once.Do(func() {
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
		close(r.done)
	})
}

// wait waits until the state arrived, and returns the error of its
// transfer, if it failed; nil if none follows. Stop ends the wait.
func (r *stateReceipt) wait(stop <-chan struct{}) error {
	select {
	case <-r.done:
	case <-stop:
		select {
		case <-r.done:
		default:
			return ErrStopped
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// discard drops a state nobody took: Ready calls it, so that a state the
// application ignores does not stay in memory for the process's life.
func (r *stateReceipt) discard() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone == "" {
		r.data, r.gone = nil, "Ready discarded it"
	}
}

// InheritedState returns the state the parent generation saved with
// [Options.SaveState] for this upgrade, if its version is version. Call it
// before [Upgrader.Ready]: it waits for the state, which arrives right
// after the inventory, within [Options.ReadyTimeout] of the start.
//
// The state is handed over once: the first call whose version matches
// returns it, and molt keeps no reference to it (the caller owns the
// slice); later calls, and calls after Ready (which drops a state nobody
// took), return [ErrStateTaken]. Errors: [ErrNoState] in generation 1
// or when the parent saved none (the application starts fresh); a
// [*StateVersionError], which matches [ErrStateVersion], when the parent
// saved another version (the state stays, so a successor that can read
// that version may ask again for it); the hand-off's error if the state
// did not arrive (the parent was told and serves on; Ready returns the
// same error); [ErrStopped] after Stop.
func (u *Upgrader) InheritedState(version string) ([]byte, error) {
	p := u.parent
	if p == nil {
		return nil, fmt.Errorf("%w: generation %d has no parent", ErrNoState, u.generation)
	}
	r := p.state
	if !r.follows {
		return nil, fmt.Errorf("%w: the parent generation (pid %d) saved none", ErrNoState, p.pid)
	}
	if err := r.wait(u.lc.stop); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.gone != "":
		return nil, fmt.Errorf("%w: %s", ErrStateTaken, r.gone)
	case r.version != version:
		return nil, &StateVersionError{Saved: r.version, Want: version}
	}
	data := r.data
	r.data, r.gone = nil, "an earlier InheritedState call took it"
	return data, nil
}

// awaitState is Ready's wait for the state: it returns the error of its
// transfer, if it failed, and drops a state nobody took. A generation
// without parent, or whose parent saved none, waits for nothing.
func (u *Upgrader) awaitState() error {
	if u.parent == nil {
		return nil
	}
	err := u.parent.state.wait(u.lc.stop)
	u.parent.state.discard()
	return err
}
