package molt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// The parent's side of an upgrade, in the order it happens: Upgrade
// saves the application's state (state.go), starts a successor
// (process.go) with the HELLO already in its channel, sends the inventory
// in batches and the state, waits for READY (or the successor's
// failure), runs the commit hooks, sends the ACK and waits until the
// successor has read it; only then has the successor taken over.
// Afterwards the parent hands idle connections over on the same channel
// (handover.go) while it drains.

// exitGrace is how long a successor that reported failure, or closed the
// hand-off channel, gets to exit on its own before it is killed: enough to
// learn its exit status, short enough not to hold up the next upgrade.
const exitGrace = 5 * time.Second

// commitTimeout bounds the commit hooks of one upgrade (see OnCommit).
const commitTimeout = 10 * time.Second

// Upgrade starts a successor — the executable found at this process's path
// now (so a replaced binary or a switched symlink is picked up), with the
// same arguments, working directory and environment unless
// [Options.Command] changes them — hands it the inventory and waits until it
// calls Ready. When this process sets [Options.Check], the new binary's
// pre-flight check runs first (see [Upgrader.Check]), and a failing one
// fails the upgrade at [StageCheck] before anything is handed over.
// With [Options.Probation], Upgrade returns at the end of the probation.
//
// On success Upgrade returns nil after [Upgrader.Exit] was closed with
// reason [Upgraded]: drain and exit. Otherwise this generation goes on
// serving and the error says why: [ErrNotReady] before Ready,
// [ErrUpgradeInProgress] while another Upgrade runs (exactly one runs at a
// time, from the call until its successor is ready or reaped),
// [ErrUpgraded] after a successful one, [ErrStopped] after Stop,
// [ErrTooManyDraining] while [Options.MaxDraining] older generations still
// run (nothing was started), or a [*ChildError] for a check that failed,
// or a successor that did not start, failed the hand-off, exited, was
// killed by a signal, reported a failure, missed [Options.ReadyTimeout]
// ([ErrReadyTimeout]), was abandoned because ctx ended, or died during the
// probation ([ErrRolledBack]). A failed successor has been killed with its
// process group and reaped when Upgrade returns.
func (u *Upgrader) Upgrade(ctx context.Context) error { return u.upgrade(ctx, nil) }

// upgrade is Upgrade, to a successor this process starts (tk nil) or to
// the taker tk, which connected by itself (takeover.go).
func (u *Upgrader) upgrade(ctx context.Context, tk *takerConn) error {
	start := time.Now()
	plan, err := u.beginUpgrade(start)
	if err != nil {
		if tk != nil {
			tk.refuse(err)
		}
		return err
	}
	// Stop interrupts an upgrade the way ctx does.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() { // ends when Upgrade returns, at the latest
		select {
		case <-u.lc.stop:
			cancel(ErrStopped)
		case <-ctx.Done():
		}
	}()
	u.log.Info("molt: upgrade started", "entries", len(plan), "takeover", tk != nil)
	var s *process
	if u.opts.Check != nil && tk == nil { // a taker runs already: there is nothing to check
		err = u.Check(ctx)
	}
	if err == nil {
		s, err = u.runUpgrade(ctx, plan, tk)
	}
	switch {
	case err != nil:
	case u.opts.Probation > 0:
		// The commit waits for the end of the probation: until then this
		// generation may take the service back, so it stays, for
		// everyone else (systemd), the service.
		err = u.acknowledge(s, true)
		stopping := false
		if err == nil {
			stopping, err = u.probation(ctx, s)
		}
		if err == nil {
			u.commit(s)
			if !stopping {
				u.endProbation(s)
			}
		}
	default:
		u.commit(s)
		err = u.acknowledge(s, false)
	}
	ev := Event{Time: start, Duration: time.Since(start), Err: err}
	if ce := (*ChildError)(nil); errors.As(err, &ce) {
		ev.SuccessorPID = ce.PID
	} else if s != nil {
		ev.SuccessorPID = s.pid()
	}
	if err != nil {
		u.inv.resumeAccept() // after a rollback, accepting again already
		u.yields.resume()
		u.inv.endSend(false)
		if perr := u.writePIDFile(); perr != nil {
			u.log.Warn("molt: could not restore the PID file after a failed upgrade", "err", perr)
		}
		stage := ""
		if ce := (*ChildError)(nil); errors.As(err, &ce) {
			stage = ce.Stage.String()
		}
		u.log.Error("molt: upgrade failed", "successor_pid", ev.SuccessorPID, "stage", stage,
			"duration", ev.Duration, "err", err)
		u.lc.transition(StateUpgrading, StateReady, ev)
		return err
	}
	u.took.Store(s)
	s.release() // it serves now: reap it whenever it exits, never kill it
	u.unlinkWhenSuccessorExits(s)
	u.inv.endSend(true)
	u.log.Info("molt: upgrade succeeded", "successor_pid", ev.SuccessorPID, "duration", ev.Duration)
	u.lc.transition(StateUpgrading, StateDraining, ev)
	u.armDrainTimeout()
	return nil
}

// UpgradeIfGeneration is [Upgrader.Upgrade] on a condition: that this
// process serves as generation n ([Upgrader.Generation]). Otherwise it
// starts nothing and returns an error matching [ErrGenerationChanged] that
// names both generations. It is for deploy tools that read the generation,
// decide, and then upgrade: two of them that read the same generation
// cannot stack two upgrades, since the second finds the first one's
// successor serving. A process that was already replaced returns
// [ErrUpgraded], as Upgrade does, so that a caller going through the
// control socket asks the serving generation.
func (u *Upgrader) UpgradeIfGeneration(ctx context.Context, n uint64) error {
	if u.generation != n && u.lc.now() != StateDraining {
		return fmt.Errorf("%w: generation %d serves (pid %d), not generation %d", ErrGenerationChanged, u.generation, os.Getpid(), n)
	}
	return u.Upgrade(ctx)
}

// beginUpgrade moves ready → upgrading and plans the hand-off: the
// entries to send, in inventory order.
func (u *Upgrader) beginUpgrade(start time.Time) ([]*entry, error) {
	if u.lc.stopRequested() { // Stop began: it would not wait for this upgrade
		return nil, ErrStopped
	}
	if p := u.parent; p != nil && p.probation.Load() {
		// The parent's upgrade is still running: it would take the
		// service back when this process ends after its own upgrade.
		return nil, fmt.Errorf("%w: the parent generation (pid %d) has this one on probation", ErrUpgradeInProgress, p.pid)
	}
	if u.lc.now() == StateReady {
		if err := u.checkDraining(); err != nil {
			return nil, err
		}
	}
	if u.generation >= handoff.MaxGeneration {
		return nil, fmt.Errorf("molt: generation %d is the last the hand-off protocol counts; restart the service to start again from 1", u.generation)
	}
	if !u.lc.transition(StateReady, StateUpgrading, Event{}) {
		switch u.lc.now() {
		case StateStarting:
			return nil, ErrNotReady
		case StateUpgrading:
			return nil, ErrUpgradeInProgress
		case StateDraining:
			return nil, ErrUpgraded
		}
		return nil, ErrStopped
	}
	plan, err := u.inv.plan()
	if err != nil {
		u.lc.transition(StateUpgrading, StateReady, Event{Time: start, Duration: time.Since(start), Err: err})
		return nil, err
	}
	return plan, nil
}

// OnCommit registers fn to be called in every later upgrade once the
// successor has said READY and before it is told that it took over (the
// ACK): this process still serves and is still, for everyone else, the
// service. It is the place for what must be true before the successor's
// Ready returns — package systemd hands the unit's main PID over here and
// waits for systemd to confirm it. fn gets the successor's PID and a
// context whose deadline (10 s at most) bounds it; the upgrade waits for
// it. fn cannot stop the upgrade: a successor that then fails to take the
// ACK fails the upgrade ([EventUpgradeFailed] follows), and this process
// serves on. Hooks run in the order they were registered, in the
// goroutine that called Upgrade; fn must not call OnCommit or a remove
// function (hooks run under the lock those take). The returned function
// removes fn; after it returns, fn is not called again.
func (u *Upgrader) OnCommit(fn func(ctx context.Context, successorPID int)) (remove func()) {
	return u.commitHooks.add(fn)
}

// commit runs the commit hooks for successor s.
func (u *Upgrader) commit(s *process) {
	if u.commitHooks.empty() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	u.commitHooks.run(func(fn func(context.Context, int)) { fn(ctx, s.pid()) })
}

// acknowledge sends the ACK that ends the successor's Ready (after
// PROBATION, if a probation follows). A successor that died right after
// READY cannot take it (the write fails, or it closes its end with the ACK
// unread): the upgrade fails, and this generation serves on.
func (u *Upgrader) acknowledge(s *process, probation bool) error {
	s.sendMu.Lock()
	s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	err := u.sendPredecessors(s)
	if err == nil && probation {
		err = s.conn.SendProbation()
	}
	if err == nil {
		// The successor reads shared packet sockets once it has the
		// ACK: this generation stops first (yield.go).
		u.yields.yield()
		err = s.conn.SendAck()
	}
	s.conn.SetWriteDeadline(time.Time{})
	s.sendMu.Unlock()
	if err == nil {
		err = ackTaken(s.conn, exitGrace)
	}
	if err == nil {
		return nil
	}
	// Read the shared packet sockets again before the successor is
	// waited for and killed (up to exitGrace): it has not taken the ACK,
	// so it does not read them.
	u.yields.resume()
	return s.fail(StageInit, fmt.Errorf("molt: successor did not take the ACK after READY: %w", err), exitGrace, true)
}

// sendBatch is how many entries sendInventory sends at a time: one
// INVENTORY message's worth of descriptors.
const sendBatch = handoff.MaxFDsPerMessage

// sendInventory hands plan to the successor, a batch at a time, with the
// handles' own descriptors: no duplicates (see inventory.sendBatch). That
// saves two system calls per entry and, more, keeps this process's
// descriptor table from growing: growing the table of a multi-threaded
// process waits for an RCU grace period, measured at 8 to 16 ms per
// doubling, which the hand-off of 1,000 listeners paid once and that of
// 10,000 twice.
func (u *Upgrader) sendInventory(c *handoff.Conn, plan []*entry) error {
	wires := make([]handoff.Entry, 0, min(len(plan), sendBatch))
	for len(plan) > 0 {
		batch := plan[:min(len(plan), sendBatch)]
		plan = plan[len(batch):]
		if err := u.inv.sendBatch(batch, wires[:0], c.SendInventory); err != nil {
			return err
		}
		if testHookBatchSent != nil {
			testHookBatchSent(len(batch), len(plan))
		}
	}
	return nil
}

// testHookBatchSent, if not nil, is called by sendInventory after each
// batch, with the size of the batch and the number of entries still to
// send. Tests set it to act in the middle of a hand-off; nil in production.
var testHookBatchSent func(sent, left int)

// sendConn sends one handed-over connection's descriptor to the successor
// that took over. After one failure (a successor that stopped reading) it
// fails at once, so a drain does not wait for every connection in turn.
func (u *Upgrader) sendConn(e handoff.Entry, fd int) error {
	s := u.took.Load()
	if s == nil {
		return ErrNoSuccessor
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.sendErr != nil {
		return s.sendErr
	}
	s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := s.conn.SendConn(e, fd); err != nil {
		s.sendErr = fmt.Errorf("%w: %w", ErrNoSuccessor, err)
		return s.sendErr
	}
	return nil
}

// unlinkWhenSuccessorExits watches successor s, which took over, for as
// long as this generation drains. A draining generation is a link in the
// chain that carries idle connections from older generations to the
// serving one (receiveConn); once s has exited, what reaches this
// generation can go nowhere and would be closed. So it stops reading its
// parent's channel: the parent's next HandOver fails at once (EPIPE, the
// messages already sent stay readable) and the parent keeps its
// connections, answering each one's next request with "Connection: close".
func (u *Upgrader) unlinkWhenSuccessorExits(s *process) {
	p := u.parent
	if p == nil {
		return
	}
	u.wg.Go(func() {
		select {
		case <-s.exited:
		case <-p.gone: // nothing comes from the parent any more
			return
		case <-u.lc.stop:
			return
		}
		u.log.Info("molt: successor exited while this generation drains; the parent keeps the connections it would hand over",
			"successor_pid", s.pid(), "parent_pid", p.pid)
		p.conn.CloseRead()
	})
}

// runUpgrade starts the successor and carries the hand-off of plan until
// READY or a failure. On failure the successor is dead and reaped and
// every descriptor of this upgrade is closed.
func (u *Upgrader) runUpgrade(ctx context.Context, plan []*entry, tk *takerConn) (*process, error) {
	deadline := time.Now().Add(u.opts.readyTimeout())

	state, err := u.saveState(ctx, deadline) // state.go; nil without SaveState
	if err != nil {
		if tk != nil {
			tk.refuse(err)
		}
		return nil, &ChildError{Stage: StageStart, Err: err}
	}
	hello := handoff.Hello{Generation: u.generation + 1, ParentPID: os.Getpid(), Entries: len(plan), State: state != nil}
	var s *process
	if tk != nil {
		if s, err = tk.start(hello); err != nil {
			return nil, &ChildError{PID: tk.cred.PID, Stage: StageStart, Err: err}
		}
		u.log.Info("molt: taker connected", "successor_pid", s.pid(), "uid", tk.cred.UID)
	} else {
		cmd, err := u.successorCommand()
		if err != nil {
			return nil, &ChildError{Stage: StageStart, Err: err}
		}
		if s, err = startSuccessor(cmd, &u.reapers, hello); err != nil {
			return nil, &ChildError{Stage: StageStart, Err: err}
		}
		u.log.Info("molt: successor started", "successor_pid", s.pid(), "executable", cmd.Path)
	}

	s.conn.SetDeadline(deadline)
	// ctx's end interrupts the channel's writes at once; the reader below
	// waits in poll(2), which only Close ends (fail closes the channel
	// before it waits for the reader).
	defer context.AfterFunc(ctx, func() { s.conn.SetDeadline(time.Unix(1, 0)) })()
	// The successor's first message is read from the start: a FAILED
	// that comes while the inventory is still being sent stops the send
	// (whose batch holds listeners that a Close would wait for) at once.
	replies := make(chan reply, 1)
	go func() { // ends at the first message, end-of-file, the deadline, or conn.Close
		// READY is noticed in a system call, not by the network poller,
		// which a busy process consults late (see WaitReadable).
		s.conn.WaitReadable(deadline) // RecvMessage reports what ended it
		m, err := s.conn.RecvMessage()
		s.conn.SetWriteDeadline(time.Unix(1, 0)) // nothing more to send before the next step sets its own
		replies <- reply{m, err}
	}()
	var (
		r        reply
		answered bool // r holds the reader's result; the reader has ended
	)
	failAt := func(stage Stage, cause error, grace time.Duration, preferExit bool) error {
		err := s.fail(stage, cause, grace, preferExit)
		if !answered {
			<-replies // the closed channel ends the reader
		}
		return err
	}
	fail := func(cause error, grace time.Duration, preferExit bool) error {
		return failAt(StageInit, cause, grace, preferExit)
	}

	err = u.sendInventory(s.conn, plan) // after the HELLO, which startSuccessor wrote
	if err == nil {
		err = state.send(s.conn)
	}
	if err != nil {
		if ctx.Err() != nil { // ctx's end (or Stop) interrupted the send
			return nil, failAt(StageHandoff, context.Cause(ctx), 0, false)
		}
		// The successor may have said why it stopped reading; it did so
		// before it stopped, so its words are here already if at all.
		t := time.NewTimer(time.Second)
		select {
		case r = <-replies:
			answered = true
		case <-t.C:
		}
		t.Stop()
		if answered && r.err == nil && r.msg.Type == handoff.TypeFailed {
			return nil, fail(r.cause(), min(exitGrace, time.Until(deadline)), false)
		}
		if (reply{err: err}).channelEnded() {
			// Its end is closed: it exited (or is exiting) on its own
			// while it initialised, before it read what we sent, as a
			// program that does not speak molt does. Its exit status says
			// why, as it would have had it read the inventory first.
			return nil, fail(err, exitGrace, true)
		}
		return nil, failAt(StageHandoff, err, exitGrace, true)
	}

	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case r = <-replies:
		answered = true
		if r.err == nil && r.msg.Type == handoff.TypeReady {
			s.conn.SetDeadline(time.Time{})
			return s, nil
		}
		if ctx.Err() != nil { // ctx's end interrupted the read
			return nil, fail(context.Cause(ctx), 0, false)
		}
		return nil, fail(r.cause(), min(exitGrace, time.Until(deadline)), r.channelEnded())
	case <-s.exited:
		// It exited, perhaps right after saying why or sending something we
		// could not read: that beats its exit status. A READY it sent just
		// before it died does not: it serves nothing now.
		select {
		case r = <-replies:
			answered = true
			if !r.channelEnded() && (r.err != nil || r.msg.Type != handoff.TypeReady) {
				return nil, fail(r.cause(), 0, false)
			}
		case <-time.After(time.Second):
		}
		return nil, fail(nil, 0, true)
	case <-timer.C:
		return nil, fail(fmt.Errorf("%w (%v)", ErrReadyTimeout, u.opts.readyTimeout()), 0, false)
	case <-ctx.Done():
		return nil, fail(context.Cause(ctx), 0, false)
	}
}

// reply is the successor's first message, or why there was none.
type reply struct {
	msg handoff.Message
	err error
}

// channelEnded reports whether the reply only says that the channel ended
// (the successor's exit status then says more than the reply).
func (r reply) channelEnded() bool {
	return errors.Is(r.err, io.EOF) || errors.Is(r.err, io.ErrUnexpectedEOF) ||
		errors.Is(r.err, syscall.ECONNRESET) || errors.Is(r.err, syscall.EPIPE)
}

func (r reply) cause() error {
	switch {
	case r.err == nil && r.msg.Type == handoff.TypeFailed:
		return &ReportedError{Reason: r.msg.Reason}
	case r.err == nil:
		return fmt.Errorf("molt: successor sent %s before READY", r.msg.Type)
	case errors.Is(r.err, io.EOF):
		return errors.New("molt: successor closed the hand-off channel without READY")
	}
	return r.err
}
