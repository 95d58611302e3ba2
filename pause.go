package molt

import (
	"net"
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// Pausing accepts, for a probation (see Options.Probation): a generation
// whose successor took over stops accepting, but keeps its listeners
// open, so that it can accept again at once if the successor dies. The
// listening sockets are shared with the successor: while this generation
// does not accept, the successor takes every connection from the common
// queue; when it accepts again, it takes the connections the dead
// successor left there.

// pauseAccept makes every listener this generation handed out stop
// accepting until resumeAccept: Accept calls waiting in the kernel are
// woken, and they and later ones wait instead (still returning connections
// a parent hands over, and an error once the listener is closed). A
// connection accepted just before the pause is returned as usual.
func (inv *inventory) pauseAccept() {
	inv.mu.Lock()
	if inv.paused == nil {
		inv.paused = make(chan struct{})
	}
	var wake []net.Listener
	for _, e := range inv.entries {
		if ln, ok := e.live.(net.Listener); ok && e.kind == handoff.KindListener {
			wake = append(wake, ln)
		}
	}
	inv.mu.Unlock()
	// After paused is set: an Accept the deadline wakes sees the pause
	// (listener.Accept clears the deadline before it looks).
	for _, ln := range wake {
		wakeAccept(ln)
	}
}

// resumeAccept ends a pause: waiting Accept calls go back to the kernel.
func (inv *inventory) resumeAccept() {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.paused != nil {
		close(inv.paused)
		inv.paused = nil
	}
}

// acceptPaused returns nil while accepting, else a channel closed when
// the pause ends.
func (inv *inventory) acceptPaused() <-chan struct{} {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.paused
}

// wakeAccept makes an Accept of ln that waits in the kernel return at once
// with a timeout (the listener wrapper clears the deadline then).
func wakeAccept(ln net.Listener) {
	if d, ok := ln.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Unix(1, 0))
	}
}

// awaitResume waits while accepting is paused: until resumed is closed,
// or the listener is poked (a handed-over connection arrived, or it was
// closed). It returns the error Accept returns on a closed listener.
func (l *listener) awaitResume(resumed <-chan struct{}) error {
	select {
	case <-resumed:
	case <-l.wake:
	}
	if l.isClosed() {
		return &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
	}
	return nil
}

// poke wakes an Accept waiting in awaitResume.
func (l *listener) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}
