package control

import (
	"context"
	"errors"
	"time"

	"github.com/moltgo/molt"
)

// What becomes of the connections a generation accepted when it stops
// serving, so that no request is lost in an upgrade.
//
// A client may connect to the old generation an instant before the
// successor takes over, and send its request an instant after; a
// keep-alive client may send its next request at any time. Closing such a
// connection loses that request. Instead, once a successor has taken over
// (the Upgrader's Exit with reason Upgraded), every connection that holds
// no byte of an unanswered request is handed to the successor with
// molt.HandOver, like an idle HTTP connection: the request, sent or still
// to come, waits in the kernel's buffer, which moves with the descriptor,
// and the successor's control server accepts the connection from the same
// socket and answers it. A connection in the middle of a request is
// answered here first (CodeReplaced: the client asks again and reaches
// the successor), if the rest of it arrives within retireGrace, and then
// handed over; a new one is handed over as soon as its goroutine waits
// for its first request.
//
// A connection that cannot change process (the successor stopped reading
// its hand-off channel, say) is served here for retireGrace: a request
// that arrives gets its answer, and the connection is closed then. So is
// every connection when no successor took over (Close without an
// upgrade, or after Stop): nothing would answer it later, and it is
// closed at once, as its read ends.
//
// A handed-over connection reaches the successor through the hand-off
// channel between the two, which the successor reads only until it stops
// itself. So in a successor that was upgraded in turn, Close waits (up to
// parentWait) until its parent, which may still be handing it
// connections, is gone: they then have arrived, and go on to the next
// generation.

const (
	// retireGrace is how long, once a successor took over, a connection
	// that cannot be handed over is given to bring its request.
	retireGrace = time.Second
	// retryHandOver is how soon a connection that was not yet waiting in
	// its read (molt.ErrConnBusy) is tried again.
	retryHandOver = 2 * time.Millisecond
	// parentWait bounds how long Close waits for the parent generation to
	// finish handing connections over.
	parentWait = 5 * time.Second
)

// startRetire stops serving new requests for good: from now on, waiting
// connections are handed to the successor if one took over, or closed.
// It is called once the listener is closed, by watch after an upgrade or
// by Close, each of which holds a count of s.wg.
func (s *Server) startRetire() {
	s.retireOnce.Do(func() {
		handOver := s.replaced()
		s.mu.Lock()
		s.retiring, s.handOver = true, handOver
		s.graceEnd = time.Now()
		if handOver {
			s.graceEnd = s.graceEnd.Add(retireGrace)
		}
		for sc := range s.conns {
			if sc.state == connWaiting || sc.state == connPartial {
				sc.c.SetReadDeadline(s.readDeadlineLocked(sc))
			}
		}
		s.mu.Unlock()
		if handOver {
			s.wg.Add(1)
			go s.retire()
		}
	})
}

// retire hands every waiting connection to the successor, until no
// connection is left and the accept loop has ended.
func (s *Server) retire() {
	defer s.wg.Done()
	timer := time.NewTimer(retryHandOver)
	timer.Stop() // armed only while a connection is to be tried again
	for {
		s.mu.Lock()
		if s.acceptDone && len(s.conns) == 0 {
			s.mu.Unlock()
			return
		}
		var waiting []*serverConn
		for sc := range s.conns {
			if sc.state == connWaiting && !sc.handedOver && !sc.noHandOver {
				waiting = append(waiting, sc)
			}
		}
		changed := s.changed
		s.mu.Unlock()

		retry := false
		for _, sc := range waiting {
			err := molt.HandOver(sc.c, MaxRequestSize) // the line reader reads into an empty buffer this size
			s.mu.Lock()
			switch {
			case err == nil:
				sc.handedOver = true // its read ends with a timeout; its goroutine closes this copy
			case errors.Is(err, molt.ErrConnBusy):
				// Not yet in its read, or a request came first: it is
				// answered, and tried again when it waits.
				retry = true
			default:
				sc.noHandOver = true
				sc.c.SetReadDeadline(s.readDeadlineLocked(sc))
				s.log.Warn("control: connection not handed to the successor; answering it here", append(sc.peer.attrs(), "err", err)...)
			}
			s.mu.Unlock()
		}

		if retry {
			timer.Reset(retryHandOver)
		}
		select {
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// waitForParent waits, bounded, until the parent generation is gone: it
// may still be handing this generation connections, which arrive only
// while this generation reads their channel, and so only until its Stop.
func (s *Server) waitForParent() {
	ctx, cancel := context.WithTimeout(context.Background(), parentWait)
	defer cancel()
	s.upg.WaitForParent(ctx)
}
