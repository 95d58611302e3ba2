package molt

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// The successor's side of an upgrade, in the order it happens: New
// connects to the channel its parent passed (connect) and reads HELLO; the
// inventory then arrives in the background, each batch claimable at once
// (receive), then the application's state if the parent saved one
// (state.go); Ready sends READY and waits for the ACK (tellReady); then the
// channel carries the connections the parent hands over while it drains
// (watch), until its end-of-file says the parent is gone.

// envHandoffFD is the environment marker a parent sets for its successor:
// the number of the descriptor that is the successor's end of the hand-off
// channel. It is molt's only environment variable; New removes it.
const envHandoffFD = "MOLT_HANDOFF_FD"

// parentLink is a successor's channel to the generation that started it,
// or, for a taker, to the generation it takes over from.
type parentLink struct {
	conn *handoff.Conn
	pid  int
	// takeover: this process was not started by the generation at the
	// other end, but connected to its takeover socket (takeover.go).
	takeover bool
	// refused is what a FAILED from the serving generation said before
	// its ACK (a failed takeover); written by watch before it closes gone.
	refused error

	sendMu sync.Mutex // serialises this side's writes (READY, FAILED, STOP)
	// probation is set while the parent can still take the service back
	// (from PROBATION until COMMITTED or the channel's end).
	probation atomic.Bool
	acked     chan struct{} // closed when the parent acknowledged READY
	gone      chan struct{} // closed when the channel ended (or, if it broke, at Stop)
	// committed is closed when the parent can no longer take the service
	// back: at the ACK without a probation, at COMMITTED, or at the end
	// of the channel (see Upgrader.Committed).
	committed     chan struct{}
	committedOnce sync.Once

	state *stateReceipt // the application's state (state.go)
}

// connect opens the channel named by envHandoffFD and reads the HELLO. On
// failure it tells the parent why (if the descriptor is the parent's
// channel at all) and leaves nothing open.
func connect(fdText string, timeout time.Duration) (*parentLink, handoff.Hello, error) {
	fd, err := strconv.Atoi(fdText)
	if err != nil || fd < 0 {
		return nil, handoff.Hello{}, fmt.Errorf("molt: %s=%q is not a descriptor number", envHandoffFD, fdText)
	}
	// Only the channel of the process that started this one is used: a
	// stray or forged marker naming stdout, a log socket or any other
	// descriptor is refused, and that descriptor is left as it is.
	c, err := handoff.FromFD(fd, os.Getppid())
	if err != nil {
		return nil, handoff.Hello{}, fmt.Errorf("molt: %s=%d is not a hand-off channel from the parent process: %w", envHandoffFD, fd, err)
	}
	c.SetDeadline(time.Now().Add(timeout)) // the whole hand-off; cleared once the inventory is in
	hello, err := c.RecvHello()
	if err == nil && hello.Generation < 2 {
		err = fmt.Errorf("parent announced generation %d (want 2 or more)", hello.Generation)
	}
	if err != nil {
		err = fmt.Errorf("molt: hand-off from parent: %w", err)
		c.SetWriteDeadline(time.Now().Add(time.Second))
		c.SendFailed(err.Error())
		c.Close()
		return nil, handoff.Hello{}, err
	}
	return newParentLink(c, hello, false), hello, nil
}

// newParentLink is the link to the generation that sent hello on c.
func newParentLink(c *handoff.Conn, hello handoff.Hello, takeover bool) *parentLink {
	return &parentLink{conn: c, pid: hello.ParentPID, takeover: takeover,
		acked: make(chan struct{}), gone: make(chan struct{}), committed: make(chan struct{}),
		state: newStateReceipt(hello.State)}
}

// receive receives the n entries the parent announced into inv, a batch
// at a time, each one claimable as soon as it is in: the service's Listen
// calls run while the rest is still in transit (10,000 listeners take
// about 10 ms to arrive, which their claims, some 60 ms, now hide). A
// transfer that fails is reported to the parent and recorded for Listen,
// the look-ups and Ready to return. Then it receives the state, if the
// parent announced one (a failure there is reported alike, and recorded
// for InheritedState and Ready), and watches the parent until the channel
// ends.
func (u *Upgrader) receive(p *parentLink, n int) {
	defer u.wg.Done()
	err := p.conn.RecvInventoryBatches(n, u.inv.receive)
	inventoryIn := err == nil
	if inventoryIn {
		u.inv.receiveEnded(nil) // Listen and its kin need not wait for the state
		err = p.state.receive(p.conn, u)
	}
	switch {
	case err == nil:
		p.conn.SetDeadline(time.Time{})
	case u.lc.stopRequested(): // Stop closed the channel
		err = ErrStopped
	default:
		err = fmt.Errorf("molt: hand-off from parent: %w", err)
		u.log.Error("molt: hand-off from parent failed", "err", err)
		p.fail(err)
		// A parent still sending gets EPIPE at once instead of blocking
		// on a full socket until its deadline, holding its listeners.
		p.conn.CloseRead()
	}
	p.state.end(err)
	if !inventoryIn {
		u.inv.receiveEnded(err)
	}
	if err != nil {
		// The channel is broken, but the parent lives on (and will end
		// this process): WaitForParent returns only at Stop.
		<-u.lc.stop
		close(p.gone)
		return
	}
	u.watch(p)
}

// commit records that the parent can no longer take the service back.
func (p *parentLink) commit() { p.committedOnce.Do(func() { close(p.committed) }) }

// fail tells the parent that this successor failed and why, so that its
// Upgrade reports the cause rather than an exit status or a later Stop.
// The parent acts on the successor's first message only.
func (p *parentLink) fail(err error) {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.conn.SetWriteDeadline(time.Now().Add(time.Second))
	p.conn.SendFailed(err.Error())
}

// testHookReadySent, if not nil, is called by Ready right after READY was
// written to the parent, before the wait for its ACK. It is a test hook and
// nil in production: the tests set it (export_test.go) in a successor to
// crash that process between READY and ACK.
var testHookReadySent func()

// tellReady sends READY and waits for the parent's ACK. A parent that is
// gone, or does not answer in time, leaves this generation serving alone.
// Only a taker whose takeover the serving generation refused (a FAILED
// before the ACK) gets an error: it must not serve.
func (u *Upgrader) tellReady(p *parentLink) error {
	timeout := u.opts.readyTimeout()
	p.sendMu.Lock()
	p.conn.SetWriteDeadline(time.Now().Add(timeout))
	err := p.conn.SendReady()
	p.sendMu.Unlock()
	if err != nil {
		u.log.Warn("molt: parent gone before READY; serving alone", "err", err)
		return nil
	}
	if testHookReadySent != nil {
		testHookReadySent()
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.acked:
	case <-p.gone:
		// watch closes acked before gone: an ACK that arrived just before
		// the end of the channel counts.
		switch {
		case isDone(p.acked):
		case p.refused != nil:
			return p.refused
		default:
			u.log.Warn("molt: parent gone before it acknowledged READY; serving alone")
		}
	case <-u.lc.stop:
	case <-t.C:
		u.log.Warn("molt: parent did not acknowledge READY; serving anyway", "waited", timeout)
	}
	return nil
}

// watch reads the parent's messages until the channel ends: an ACK after
// READY, connections it hands over, then end-of-file when the parent stops
// or exits.
func (u *Upgrader) watch(p *parentLink) {
	defer close(p.gone)
	defer p.commit() // a parent that is gone takes nothing back
	defer p.probation.Store(false)
	acked := false
	for {
		m, err := p.conn.RecvMessage()
		if err != nil {
			if !u.lc.stopRequested() {
				u.log.Info("molt: parent gone", "parent_pid", p.pid, "err", errorOrEOF(err))
				// Nothing more can come or go: a process that serves for
				// months keeps no descriptor for its long-gone parent.
				p.conn.Close()
			}
			return
		}
		switch {
		case m.Type == handoff.TypeAck && !acked:
			acked = true
			if !p.probation.Load() {
				p.commit()
			}
			close(p.acked)
		case m.Type == handoff.TypePredecessors && !acked:
			u.older.addOlder(m.Predecessors)
		case m.Type == handoff.TypeProbation && !acked:
			p.probation.Store(true)
		case m.Type == handoff.TypeCommitted && acked:
			p.probation.Store(false)
			p.commit()
			u.log.Info("molt: the parent's probation passed", "parent_pid", p.pid)
		case m.Type == handoff.TypeFailed && !acked && p.takeover:
			p.refused = fmt.Errorf("molt: takeover failed: %w", &handoff.RefusedError{Reason: m.Reason})
		case m.Type == handoff.TypeConn:
			u.receiveConn(m)
		default:
			u.log.Warn("molt: unexpected message from parent", "message_type", m.Type.String())
		}
	}
}

// receiveConn gives a connection the parent handed over to the listener it
// was accepted on. If this generation no longer serves that listener (it is
// draining itself), the connection goes on to its own successor; only
// without one is it closed.
func (u *Upgrader) receiveConn(m handoff.Message) {
	if l := u.inv.listenerFor(m.Entry); l != nil {
		f := os.NewFile(uintptr(m.FD), "molt:conn")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			u.log.Warn("molt: connection from parent unusable", "err", err)
			return
		}
		if !l.push(c) {
			if err := passOn(u.sendConn, c.(liveHandle), m.Entry); err != nil {
				u.log.Warn("molt: handed-over connection reached a closed listener", "entry", m.Entry.Network+" "+m.Entry.Addr, "err", err)
			}
			c.Close()
		}
		return
	}
	defer closeFD(m.FD)
	if err := u.sendConn(m.Entry, m.FD); err != nil {
		u.log.Warn("molt: connection from parent for a listener this generation does not serve",
			"entry", m.Entry.Network+" "+m.Entry.Addr, "err", err)
	}
}

func errorOrEOF(err error) any {
	if err == nil {
		return nil
	}
	return err.Error()
}
