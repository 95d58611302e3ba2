package quic

import (
	"sync"
	"time"
)

// deadline is a read deadline for a reader that waits on channels: wait
// returns a channel closed once the deadline has passed.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	done  chan struct{}
}

func (d *deadline) init() { d.done = make(chan struct{}) }

// set moves the deadline to t; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		// the old timer fired (or is firing): start a fresh channel
		d.done = make(chan struct{})
	}
	d.timer = nil
	select {
	case <-d.done:
		d.done = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return
	}
	done := d.done
	dur := time.Until(t)
	if dur <= 0 {
		close(done)
		return
	}
	d.timer = time.AfterFunc(dur, func() { close(done) })
}

func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.done
}
