package molt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// exitGrace is how long a successor that reported failure, or closed the
// hand-off channel, gets to exit on its own before it is killed: enough to
// learn its exit status, short enough not to hold up the next upgrade.
const exitGrace = 5 * time.Second

// Upgrade starts a successor — the executable found at this process's path
// now (so a replaced binary or a switched symlink is picked up), with the
// same arguments, working directory and environment unless
// [Options.Command] changes them — hands it the inventory and waits until it
// calls Ready.
//
// On success Upgrade returns nil after [Upgrader.Exit] was closed with
// reason [Upgraded]: drain and exit. Otherwise this generation goes on
// serving and the error says why: [ErrNotReady] before Ready,
// [ErrUpgradeInProgress] while another Upgrade runs (exactly one runs at a
// time, from the call until its successor is ready or reaped),
// [ErrUpgraded] after a successful one, [ErrStopped] after Stop, or a
// [*ChildError] for a successor that did not start, failed the hand-off,
// exited, was killed by a signal, reported a failure, missed
// [Options.ReadyTimeout] ([ErrReadyTimeout]) or was abandoned because ctx
// ended. A failed successor has been killed with its process group and
// reaped when Upgrade returns.
func (u *Upgrader) Upgrade(ctx context.Context) error {
	start := time.Now()
	plan, err := u.beginUpgrade()
	if err != nil {
		return err
	}
	// Stop interrupts an upgrade the way ctx does.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() { // ends when Upgrade returns, at the latest
		select {
		case <-u.stopping:
			cancel(ErrStopped)
		case <-ctx.Done():
		}
	}()
	u.log.Info("molt: upgrade started", "entries", len(plan))
	u.emit(Event{Kind: EventUpgradeStarted})
	s, err := u.runUpgrade(ctx, plan)
	res := &UpgradeResult{Started: start, Duration: time.Since(start), Err: err}
	if s != nil {
		res.SuccessorPID = s.pid()
	} else if ce := (*ChildError)(nil); errors.As(err, &ce) {
		res.SuccessorPID = ce.PID
	}
	ev := Event{SuccessorPID: res.SuccessorPID, Duration: res.Duration, Err: err}
	if err != nil {
		u.finishUpgrade(s, res)
		stage := ""
		if ce := (*ChildError)(nil); errors.As(err, &ce) {
			stage = ce.Stage.String()
		}
		u.log.Error("molt: upgrade failed", "successor_pid", res.SuccessorPID, "stage", stage,
			"duration", res.Duration, "err", err)
		ev.Kind = EventUpgradeFailed
		u.emit(ev)
		return err
	}
	ev.Kind = EventUpgradeSucceeded
	u.emit(ev) // while this process still serves, before the successor's Ready returns
	if err := u.acknowledge(s); err != nil {
		res.Err = err
		u.finishUpgrade(nil, res)
		u.log.Error("molt: upgrade failed", "successor_pid", res.SuccessorPID, "stage", StageInit.String(), "err", err)
		ev.Kind, ev.Err = EventUpgradeFailed, err
		u.emit(ev)
		return err
	}
	u.finishUpgrade(s, res)
	u.log.Info("molt: upgrade succeeded", "successor_pid", res.SuccessorPID, "duration", res.Duration)
	u.emit(Event{Kind: EventDraining, SuccessorPID: res.SuccessorPID})
	return nil
}

// beginUpgrade moves Ready → Upgrading and returns the entries to hand
// over, in inventory order (see sendInventory). A file closed behind the
// Upgrader's back (by its user, not through molt) leaves the inventory.
// Only a file can be: every socket is handed out wrapped, and its Close
// goes through release.
func (u *Upgrader) beginUpgrade() ([]*entry, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if isDone(u.stopping) { // Stop began: it would not wait for this upgrade
		return nil, ErrStopped
	}
	switch u.state {
	case StateStarting:
		return nil, ErrNotReady
	case StateUpgrading:
		return nil, ErrUpgradeInProgress
	case StateDraining:
		return nil, ErrUpgraded
	case StateStopped:
		return nil, ErrStopped
	}
	if u.generation >= handoff.MaxGeneration {
		return nil, fmt.Errorf("molt: generation %d is the last the hand-off protocol counts; restart the service to start again from 1", u.generation)
	}
	// File gives out the *os.File itself, which its user may close
	// behind molt's back, during the upgrade too: files are duplicated
	// now, so each goes over as it is at this moment (or is left out,
	// closed already).
	dups := make(map[*entry]int)
	for _, e := range u.entries {
		if e.kind != handoff.KindFile {
			continue
		}
		fd, err := dupFD(e.live)
		if err != nil && !errors.Is(err, errClosedHandle) {
			for _, fd := range dups {
				closeFD(fd)
			}
			return nil, fmt.Errorf("molt: duplicate %s for the hand-off: %w", e.describe(), err)
		}
		if err == nil {
			dups[e] = fd
		}
	}
	kept := u.entries[:0]
	for _, e := range u.entries {
		_, dup := dups[e]
		if (e.kind == handoff.KindFile && !dup) || (e.kind != handoff.KindFile && !isOpen(e.live)) {
			u.log.Info("molt: entry closed by its user; left out of the hand-off", "entry", e.describe())
			continue
		}
		e.unsent = true
		kept = append(kept, e)
	}
	u.earlyDups = dups
	clear(u.entries[len(kept):])
	u.entries = kept
	u.state = StateUpgrading
	u.upgrading = make(chan struct{})
	return slices.Clone(kept), nil
}

// finishUpgrade leaves Upgrading: to Draining with the successor in charge,
// or back to Ready. Stop waits for it (u.upgrading).
func (u *Upgrader) finishUpgrade(s *successor, res *UpgradeResult) {
	err := res.Err
	u.mu.Lock()
	u.last = res
	if err == nil {
		u.state = StateDraining
		u.successor = s
		u.exitLocked(Upgraded)
	} else {
		u.failures++
		if u.state == StateUpgrading {
			u.state = StateReady
		}
	}
	close(u.upgrading)
	u.upgrading = nil
	u.mu.Unlock()

	if err == nil {
		s.release() // it serves now: reap it whenever it exits, never kill it
		return
	}
	if u.opts.PIDFile != "" {
		if perr := u.writePIDFile(); perr != nil {
			u.log.Warn("molt: could not restore the PID file after a failed upgrade", "err", perr)
		}
	}
}

// acknowledge sends the ACK that ends the successor's Ready, before this
// generation commits. A successor that died right after READY cannot take
// it (the write fails, or it closes its end with the ACK unread): the
// upgrade fails, and this generation serves on.
func (u *Upgrader) acknowledge(s *successor) error {
	u.sendMu.Lock()
	s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	err := s.conn.SendAck()
	s.conn.SetWriteDeadline(time.Time{})
	u.sendMu.Unlock()
	if err == nil {
		err = ackTaken(s.conn, exitGrace)
	}
	if err == nil {
		return nil
	}
	return s.fail(StageInit, fmt.Errorf("molt: successor did not take the ACK after READY: %w", err), exitGrace, true)
}

// runUpgrade starts the successor and carries the hand-off of plan until
// READY or a failure. On failure the successor is dead and reaped and
// every descriptor of this upgrade is closed.
func (u *Upgrader) runUpgrade(ctx context.Context, plan []*entry) (*successor, error) {
	defer u.endSend()
	deadline := time.Now().Add(u.opts.readyTimeout())

	cmd, err := u.successorCommand()
	if err != nil {
		return nil, &ChildError{Stage: StageStart, Err: err}
	}
	s, err := startSuccessor(cmd, &u.reapers)
	if err != nil {
		return nil, &ChildError{Stage: StageStart, Err: err}
	}
	u.log.Info("molt: successor started", "successor_pid", s.pid(), "executable", cmd.Path)

	s.conn.SetDeadline(deadline)
	// ctx's end interrupts the channel's reads and writes at once.
	defer context.AfterFunc(ctx, func() { s.conn.SetDeadline(time.Unix(1, 0)) })()
	// The successor's first message is read from the start: a FAILED
	// that comes while the inventory is still being sent stops the send
	// (whose batch holds listeners that a Close would wait for) at once.
	replies := make(chan reply, 1)
	go func() { // ends at the first message, end-of-file, the deadline, or conn.Close
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

	hello := handoff.Hello{Generation: u.generation + 1, ParentPID: os.Getpid(), Entries: len(plan)}
	err = s.conn.SendHello(hello)
	if err == nil {
		err = u.sendInventory(s.conn, plan)
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
