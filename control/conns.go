package control

import (
	"fmt"
	"net"
	"time"

	"github.com/moltgo/molt"
)

// Admission and bookkeeping of the connections a Server serves.
//
// A connection's peer is checked in the accept loop, before it gets a
// goroutine or a slot: a refused peer costs one reply and a close, and a
// flood of them cannot crowd anyone out. Slots are counted per user: each
// allowed uid may hold maxConnsPerUID connections at once, whoever else is
// connected, so one user (a monitor that reconnects in a loop, a flood
// through a wide Options.Mode) can exhaust only its own share, and an
// upgrade or stop from another allowed user always finds a slot. The
// total is bounded by the allowed users: the service's own, root, and the
// members of Options.Group.

// maxConnsPerUID bounds the connections of one user served at once; one
// more is answered with CodeBusy and closed. It is what the whole server
// allowed before the bound was per user: one user's tools (a deploy
// script's parallel calls, a monitor) fit in it as before.
const maxConnsPerUID = 64

// refuseTimeout bounds the write of a refusal, done in the accept loop.
// A new connection's buffer is empty, so the write does not wait.
const refuseTimeout = time.Second

// connState is where a connection is in its exchange, for the hand-over
// when this generation stops serving (retire.go).
type connState int

const (
	connNew     connState = iota // accepted; its goroutine has not started to read
	connWaiting                  // reading, holding no byte of the next request: it can change process
	connPartial                  // reading the rest of a request this process holds a part of
	connBusy                     // a request is being read or answered
)

// serverConn is one connection being served.
type serverConn struct {
	c    net.Conn // as accepted: molt's wrapper, which HandOver needs
	peer peer

	// Protected by Server.mu.
	state      connState
	idleUntil  time.Time // when the wait for the current request ends (idleTimeout)
	handedOver bool      // the successor has it; its read is about to end
	noHandOver bool      // a hand-over failed: it gets the retire grace instead
}

// admit checks a new connection's peer and books its slot, or refuses it
// at once.
func (s *Server) admit(c net.Conn) {
	p, err := peerOf(c)
	if err == nil {
		err = s.authorize(p)
	}
	if err != nil {
		s.refuse(c, p, CodePermissionDenied, "permission denied: "+err.Error())
		return
	}
	sc := s.track(c, p)
	if sc == nil {
		s.refuse(c, p, CodeBusy, fmt.Sprintf("too many connections from uid %d (%d at once); try again", p.uid, maxConnsPerUID))
		return
	}
	go s.serveConn(sc)
}

// refuse answers a connection that is not served, and closes it. The
// refusal is logged, rate-limited.
func (s *Server) refuse(c net.Conn, p peer, code Code, msg string) {
	s.refusals.note(p, code, msg)
	c.SetWriteDeadline(time.Now().Add(refuseTimeout))
	c.Write(encodeLine(Reply{V: Version, Code: code, Error: msg}))
	c.Close()
}

// track books a connection of peer p and its goroutine; nil if p's uid
// has no slot left. Connections accepted after Close are booked too: the
// accept loop ends soon, and what it accepted is handed over or answered
// like the rest (see retire).
func (s *Server) track(c net.Conn, p peer) *serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perUID[p.uid] >= maxConnsPerUID {
		return nil
	}
	s.perUID[p.uid]++
	sc := &serverConn{c: c, peer: p}
	s.conns[sc] = struct{}{}
	s.wg.Add(1) // the accept loop's own count keeps wg above zero here
	s.signalLocked()
	return sc
}

func (s *Server) untrack(sc *serverConn) {
	s.mu.Lock()
	delete(s.conns, sc)
	if s.perUID[sc.peer.uid]--; s.perUID[sc.peer.uid] == 0 {
		delete(s.perUID, sc.peer.uid)
	}
	s.signalLocked()
	s.mu.Unlock()
	sc.c.Close() // after a hand-over, this process's copy only
}

// await records that sc is about to read (the rest of) a request, and
// sets the read's deadline. fresh starts the wait for a new request;
// empty says that no byte of it is in hand.
func (s *Server) await(sc *serverConn, fresh, empty bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fresh {
		sc.idleUntil = time.Now().Add(idleTimeout)
	}
	sc.state = connPartial
	if empty {
		// Every byte read from now on belongs to a request not seen yet:
		// HandOver's reference point.
		molt.Idle(sc.c)
		sc.state = connWaiting
	}
	sc.c.SetReadDeadline(s.readDeadlineLocked(sc))
	s.signalLocked()
}

// busy records that sc's read returned: until the next await it holds
// bytes, or is ending.
func (s *Server) busy(sc *serverConn) {
	s.mu.Lock()
	sc.state = connBusy
	s.mu.Unlock()
}

// readDeadlineLocked is when sc's read must end: the idle timeout, or,
// once this generation retires, the retire grace for a connection that
// cannot be handed over (any, without a successor).
func (s *Server) readDeadlineLocked(sc *serverConn) time.Time {
	d := sc.idleUntil
	if s.retiring && (!s.handOver || sc.noHandOver || sc.state == connPartial) && s.graceEnd.Before(d) {
		d = s.graceEnd
	}
	return d
}

// signalLocked wakes whoever waits for a change of the connections.
func (s *Server) signalLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}
