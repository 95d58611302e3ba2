package molt

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// The probation (Options.Probation), both sides. The parent: after the
// successor took the ACK it stops accepting (pause.go) and watches the
// successor for the window; a death or a FAILED from it takes the service
// back, a STOP or the window's end commits. The successor: PROBATION
// before the ACK tells it that its parent can still take over again, so
// it starts no upgrade of its own until COMMITTED (or its parent's end);
// it may ask to be replaced (RollBack) and says STOP when it stops.

// testHookResumed, if not nil, is called by a parent right after it
// accepts again at a rollback. A test hook (export_test.go); nil in
// production.
var testHookResumed func()

// probation runs the probation of successor s, which has taken the ACK.
// It returns nil once the successor has served for the whole window, or
// stopped on purpose (then stopping is set), else the rollback's
// *ChildError, with this generation accepting again and the successor
// killed and reaped.
func (u *Upgrader) probation(ctx context.Context, s *process) (stopping bool, err error) {
	u.inv.pauseAccept()
	window := u.opts.Probation
	u.log.Info("molt: successor took over; on probation", "successor_pid", s.pid(), "probation", window)

	// The successor's messages are read from now on: its end of the
	// channel closes when it dies, at once, while the exit status may
	// take longer to be seen. The reader ends at the first message or
	// when the channel closes (Stop closes it, or fail below).
	msgs := make(chan reply, 1)
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		m, err := s.conn.RecvMessage()
		msgs <- reply{m, err}
	}()

	t := time.NewTimer(window)
	defer t.Stop()
	var (
		cause      error
		preferExit bool // cause only says the channel ended: the exit status says more
	)
	select {
	case <-t.C:
		u.log.Info("molt: probation passed", "successor_pid", s.pid())
		return false, nil
	case r := <-msgs:
		switch {
		case r.err == nil && r.msg.Type == handoff.TypeStop:
			u.log.Info("molt: successor stops on purpose during its probation; not taking the service back", "successor_pid", s.pid())
			return true, nil
		case r.err == nil && r.msg.Type == handoff.TypeFailed:
			cause = &ReportedError{Reason: r.msg.Reason}
		case r.err == nil:
			cause = fmt.Errorf("molt: successor sent %s during its probation", r.msg.Type)
		default:
			cause, preferExit = r.err, r.channelEnded()
		}
	case <-s.exited:
		cause, preferExit = errors.New("molt: successor exited"), true
	case <-ctx.Done():
		cause = context.Cause(ctx)
	}

	// Accept first: from here on no connection waits in a queue that
	// nobody serves. Then the successor goes, with its process group.
	u.inv.resumeAccept()
	u.yields.resume()
	if testHookResumed != nil {
		testHookResumed()
	}
	grace := time.Duration(0)
	if preferExit {
		grace = time.Second // it is exiting: learn its status
	}
	err = s.fail(StageProbation, cause, grace, preferExit)
	u.log.Error("molt: successor failed during its probation; took the service back",
		"successor_pid", s.pid(), "err", err)
	return false, err
}

// endProbation tells successor s that its probation passed. A successor
// that is gone already does not hear it, which changes nothing.
func (u *Upgrader) endProbation(s *process) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := s.conn.SendCommitted(); err != nil {
		u.log.Warn("molt: could not tell the successor that its probation passed", "successor_pid", s.pid(), "err", err)
	}
	s.conn.SetWriteDeadline(time.Time{})
}

// RollBack asks the parent generation, while it has this generation on
// probation ([Options.Probation] in the parent), to take the service back:
// for example when a health check after Ready fails. The parent accepts
// again at once and then kills this process with its process group, so
// the connections this process serves are lost. It returns
// [ErrNoProbation] if no parent has this generation on probation (there
// is none, its probation passed, or the parent is gone), or the error of
// the write; on nil, expect to be killed.
func (u *Upgrader) RollBack(reason error) error {
	p := u.parent
	if p == nil || !p.probation.Load() {
		return ErrNoProbation
	}
	msg := "asked to be rolled back"
	if reason != nil {
		msg = reason.Error()
	}
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.conn.SetWriteDeadline(time.Now().Add(time.Second))
	return p.conn.SendFailed(msg)
}

// tellStopping tells a parent that has this generation on probation that
// it stops on purpose, so that the parent does not take the service back
// (it drains and exits too). Stop calls it.
func (p *parentLink) tellStopping() {
	if !p.probation.Load() {
		return
	}
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.conn.SetWriteDeadline(time.Now().Add(time.Second))
	p.conn.SendStop()
}
