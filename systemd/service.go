package systemd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moltgo/molt"
)

const (
	// sendTimeout bounds a notification sent in the background or from an
	// Upgrader's observer: only a stuck systemd has a full queue.
	sendTimeout = 2 * time.Second
	// barrierTimeout bounds the wait for systemd to process a hand-over.
	barrierTimeout = 5 * time.Second
	// extendBy and extendEvery: while draining with
	// Options.ExtendStopTimeout, systemd's timeout is pushed extendBy
	// ahead, every extendEvery.
	extendBy    = 30 * time.Second
	extendEvery = 10 * time.Second
)

// inventoryPrefix names the entries this package adds to an Upgrader's
// inventory: "systemd/" + the descriptor name.
const inventoryPrefix = "systemd/"

// Options configure [Attach]. The zero value is ready to use.
type Options struct {
	// FDStore, if set, keeps the sockets obtained through the Service in
	// systemd's file descriptor store (FDSTORE=1 under their name), so
	// that they stay open when the service crashes and Restart= starts it
	// again, or across `systemctl restart`: clients wait in the accept
	// queue instead of being refused, and the next start adopts them from
	// LISTEN_FDS. The unit needs FileDescriptorStoreMax= (one per socket).
	// A generation stores the sockets it created, at Ready, and removes
	// from the store the names it was passed but did not claim. False
	// means nothing is stored; descriptors systemd passes are still
	// adopted.
	FDStore bool

	// ExtendStopTimeout, if set, lets a stop outlast the unit's
	// TimeoutStopSec=: while [Service.Draining] lasts, the main process
	// pushes systemd's stop timeout ahead (EXTEND_TIMEOUT_USEC of 30 s,
	// every 10 s), so that only the context given to Draining bounds the
	// drain. False, the default, sends no extension: TimeoutStopSec=
	// bounds the stop of every generation, drain included, and systemd
	// kills what is left when it passes. Set it only for a service whose
	// drain deadline is its own business and is known to be bounded.
	ExtendStopTimeout bool

	// Logger receives what the Service does in the background and what
	// goes wrong there (a notification systemd did not take, a failed
	// upgrade). Nil means silent.
	Logger *slog.Logger
}

// Service connects a [molt.Upgrader] to systemd. [Attach] creates it; it
// then tells systemd what the Upgrader does, hands the main process over to
// each successor, pings the watchdog, and gives out the sockets systemd
// passed. Its methods are safe for concurrent use.
type Service struct {
	upg      *molt.Upgrader
	n        *Notifier // nil when not started by systemd (NOTIFY_SOCKET unset)
	opts     Options
	log      *slog.Logger
	pid      int
	watchdog time.Duration // the watchdog timeout for this process; 0 when none
	unwatch  func()        // removes the Upgrader observer
	uncommit func()        // removes the commit hook

	wg sync.WaitGroup // the watchdog pinger and Draining's extenders; Close waits

	// mu protects the fields below. It is held while a notification is
	// sent, so that a watchdog ping or a status never crosses the hand-over
	// to the successor. Lock order: mu before the Upgrader's own locks (its
	// look-ups and Add methods are called with mu held); the Upgrader calls
	// its observer, which takes mu, without holding them.
	mu        sync.Mutex
	main      bool // this process is the service's main process as far as systemd knows
	ownUnit   bool // a taker started by another unit: it announces itself (see Attach)
	stopping  bool // STOPPING=1 was sent, or would have been
	closed    bool
	passed    []passedFD       // passed by systemd, not yet claimed; closed at Ready
	claimed   map[string]claim // names claimed in this process
	inherited []string         // names handed over by the previous generation
	pingStop  chan struct{}    // closed to stop the watchdog pinger; nil when none runs
	// upgradeStarted is when the running upgrade began, for the status
	// the hand-over sets.
	upgradeStarted time.Time
	closing        chan struct{} // closed by Close
}

// claim is a socket this process took under a name.
type claim struct {
	conn  syscall.Conn // the socket, for the file descriptor store; nil if the Upgrader's Listen made it
	fresh bool         // created by this process: not in the store yet
}

// Attach connects upg to systemd. Call it right after [molt.New], before
// taking sockets and before [molt.Upgrader.Ready]; use the Service for the
// sockets systemd may pass ([Service.Listen], [Service.Listener],
// [Service.PacketConn]). From then on it observes upg and tells systemd:
//
//   - at Ready: MAINPID (this process), READY=1 and a STATUS line — in the
//     first generation only; a successor is announced by its parent;
//   - when an upgrade starts: RELOADING=1 with MONOTONIC_USEC;
//   - when the successor said READY, from the Upgrader's commit hook
//     ([molt.Upgrader.OnCommit]), in one datagram sent by this process while
//     it is still the main process and before the successor is
//     acknowledged: MAINPID of the successor, READY=1 and a STATUS line; it
//     then waits (up to 5 s) until systemd processed it (BARRIER=1) before
//     the successor is let go on. From then on this process sends nothing;
//   - when it failed: READY=1 and a STATUS line with the reason; this
//     process goes on serving;
//   - at Stop, or [Service.Draining]: STOPPING=1 (and, only with
//     [Options.ExtendStopTimeout], EXTEND_TIMEOUT_USEC while it drains).
//
// If WATCHDOG_USEC applies to this process, the main process pings the
// watchdog at half its timeout. Attach reads, checks and removes LISTEN_PID,
// LISTEN_FDS and LISTEN_FDNAMES and marks the passed descriptors
// close-on-exec; they are given out by name until Ready, which closes the
// ones nobody claimed.
//
// Outside systemd (NOTIFY_SOCKET unset) Attach succeeds and the Service
// sends nothing. It fails with [ErrInvalidEnv] for a malformed variable of
// systemd's, and with [ErrTooLate] if upg is past its start. Call
// [Service.Close] when done, after upg.Stop (so that the Service still
// reports the stop): deferred right after Attach, it runs after an
// upg.Stop deferred later. It is safe to call more than once.
//
// Attach cannot see the unit file, so it cannot warn about a unit that
// lacks the settings package systemd relies on (ExecStop=, KillMode=,
// TimeoutStopFailureMode=): see the package documentation for them.
func Attach(upg *molt.Upgrader, opts Options) (*Service, error) {
	if st := upg.State(); st != molt.StateStarting {
		return nil, fmt.Errorf("%w (it is %s)", ErrTooLate, st)
	}
	n, err := NewNotifier()
	if errors.Is(err, ErrNoNotifySocket) {
		n, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	wd, err := watchdogFromEnv(upg.ParentPID())
	if err != nil {
		return nil, err
	}
	passed, err := listenFDsFromEnv()
	if err != nil {
		return nil, err
	}
	s := &Service{
		upg:      upg,
		n:        n,
		opts:     opts,
		log:      opts.Logger,
		pid:      os.Getpid(),
		watchdog: wd,
		main:     !upg.HasParent(),
		// A taker started by another unit is that unit's main process:
		// no MAINPID comes to it from the generation it took over from.
		ownUnit: upg.TookOver() && !sameUnit(upg.ParentPID()),
		passed:  passed,
		claimed: make(map[string]claim),
		closing: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, e := range upg.Stats().Inventory {
		if name, ok := strings.CutPrefix(e.Name, inventoryPrefix); ok && e.Inherited {
			s.inherited = append(s.inherited, name)
		}
	}
	s.unwatch = upg.Observe(s.observe)
	s.uncommit = upg.OnCommit(s.handOver)
	s.mu.Lock()
	s.startPingerLocked()
	s.mu.Unlock()
	if n != nil {
		s.log.Debug("systemd: attached", "notify_socket", n.addr, "passed", len(passed),
			"watchdog", wd, "generation", upg.Generation())
	}
	return s, nil
}

// Close stops the Service: it stops observing the Upgrader, ends the
// watchdog pings and every [Service.Draining] extension, waits for their
// goroutines, and closes the descriptors systemd passed that nobody
// claimed. It sends nothing. The sockets given out stay open; they are
// their users' and the Upgrader's. Close may be called more than once.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.stopPingerLocked()
	passed := s.passed
	s.passed = nil
	s.mu.Unlock()

	s.unwatch()
	s.uncommit()
	for _, p := range passed {
		closeFD(p.fd)
	}
	s.wg.Wait()
	return nil
}

// Notify sends the assignments to systemd, as [Notifier.Notify] does, if
// this process is the service's main process; otherwise it fails with
// [ErrNotMain] (a successor before Ready, a generation that handed over).
// It fails with [ErrNoNotifySocket] outside systemd. Use it for STATUS
// lines of your own; the Service sends the lifecycle notifications itself.
func (s *Service) Notify(ctx context.Context, a ...Assignment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.n == nil:
		return ErrNoNotifySocket
	case !s.main:
		return ErrNotMain
	}
	return s.n.Notify(ctx, a...)
}

// Draining tells systemd that this process drains. If it is the main
// process (a stop, not a hand-over to a successor), it sends STOPPING=1
// and STATUS=stopping: draining, unless STOPPING=1 was sent already. After
// a hand-over it sends nothing: the successor is the service now. Call
// done when the drain is over; calling it again does nothing.
//
// The unit's TimeoutStopSec= bounds the stop, this drain included: when it
// passes, systemd kills every process of the unit (with
// TimeoutStopFailureMode=kill at once, otherwise after SIGTERM and a
// second TimeoutStopSec=), and the unit ends "failed" with Result=timeout
// and this STATUS line. Give ctx a deadline below TimeoutStopSec= so that
// the drain ends by itself. With [Options.ExtendStopTimeout] the main
// process instead extends systemd's timeout (EXTEND_TIMEOUT_USEC of 30 s
// every 10 s) until done is called, ctx ends or the Service is closed:
// then ctx alone bounds the drain.
func (s *Service) Draining(ctx context.Context) (done func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == nil || !s.main || s.closed {
		return func() {}
	}
	sctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
	defer cancel()
	var as []Assignment
	if !s.stopping {
		s.stopping = true
		as = append(as, Stopping, Status("stopping: draining"))
	}
	if !s.opts.ExtendStopTimeout {
		if len(as) > 0 {
			s.notifyLocked(sctx, "draining", as...)
		}
		return func() {}
	}
	s.notifyLocked(sctx, "draining", append(as, ExtendTimeout(extendBy))...)
	x := &extender{stop: make(chan struct{})}
	s.wg.Add(1)
	go s.extend(ctx, x)
	return x.end
}

// extender is one Draining call's goroutine.
type extender struct {
	once sync.Once
	stop chan struct{}
}

func (x *extender) end() { x.once.Do(func() { close(x.stop) }) }

// extend pushes systemd's timeout ahead while a drain runs. Started by
// Draining; ends when done is called, ctx ends or Close; Close waits.
func (s *Service) extend(ctx context.Context, x *extender) {
	defer s.wg.Done()
	t := time.NewTicker(extendEvery)
	defer t.Stop()
	for {
		select {
		case <-x.stop:
			return
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		case <-t.C:
		}
		s.mu.Lock()
		if s.main {
			sctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
			s.notifyLocked(sctx, "extend timeout", ExtendTimeout(extendBy))
			cancel()
		}
		s.mu.Unlock()
	}
}

// observe is the Upgrader observer. It runs in the goroutine that calls
// Ready, Upgrade or Stop, and returns once its notification is queued (and,
// for a hand-over, processed by systemd).
func (s *Service) observe(e molt.Event) {
	switch e.Kind {
	case molt.EventReady:
		s.ready()
	case molt.EventUpgradeStarted:
		s.mu.Lock()
		s.upgradeStarted = e.Time
		s.mu.Unlock()
		s.send("upgrade started", Reloading, Status(fmt.Sprintf("reloading: starting generation %d", e.Generation+1)))
	case molt.EventUpgradeFailed:
		s.log.Error("systemd: upgrade failed; still serving", "err", e.Err, "generation", e.Generation)
		s.reclaim(e)
		// RELOADING=1 with READY=1 also ends a reload systemd asked for
		// while this upgrade was already running (Type=notify-reload).
		s.send("upgrade failed", Reloading, Ready, Status(fmt.Sprintf(
			"upgrade failed, still serving generation %d (pid %d): %v", e.Generation, e.PID, e.Err)))
	case molt.EventStopping:
		s.mu.Lock()
		s.stopPingerLocked()
		if !s.stopping {
			s.stopping = true
			ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
			s.notifyLocked(ctx, "stopping", Stopping, Status("stopping"))
			cancel()
		}
		s.mu.Unlock()
	}
}

// send notifies systemd if this process is the main process and is not
// stopping.
func (s *Service) send(what string, a ...Assignment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
	defer cancel()
	s.notifyLocked(ctx, what, a...)
}

// notifyLocked sends if there is a systemd and this process is the main
// process, and logs a failure. s.mu is held.
func (s *Service) notifyLocked(ctx context.Context, what string, a ...Assignment) bool {
	if s.n == nil || !s.main {
		return false
	}
	if err := s.n.Notify(ctx, a...); err != nil {
		s.log.Warn("systemd: notification failed", "what", what, "err", err)
		return false
	}
	return true
}

// ready runs at EventReady: it closes the passed descriptors nobody
// claimed and, once this process is the main process, takes that role. A
// successor was announced by its parent (the hand-over datagram, processed
// by systemd before the parent committed): it is the main process when
// the Upgrader says the parent committed — at once without a probation
// (the commit came before the ACK that ended Ready), else when the
// probation passed.
func (s *Service) ready() {
	s.mu.Lock()
	defer s.mu.Unlock()
	unclaimed := s.passed
	s.passed = nil
	for _, p := range unclaimed {
		closeFD(p.fd)
		s.log.Info("systemd: closed a passed descriptor nobody claimed", "name", p.name)
	}
	select {
	case <-s.upg.Committed():
		s.becomeMainLocked(unclaimed)
		return
	default:
	}
	s.wg.Add(1)
	go func() { // ends at the commit or at Close
		defer s.wg.Done()
		select {
		case <-s.upg.Committed():
		case <-s.closing:
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.becomeMainLocked(unclaimed)
	}()
}

// becomeMainLocked takes the main process's role: it updates the file
// descriptor store, announces the first generation and pings the
// watchdog. s.mu is held.
func (s *Service) becomeMainLocked(unclaimed []passedFD) {
	s.main = true
	if s.closed || s.stopping {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
	defer cancel()
	if s.opts.FDStore && s.n != nil {
		s.updateStoreLocked(ctx, unclaimed)
	}
	switch {
	case s.upg.Generation() == 1:
		s.notifyLocked(ctx, "ready", MainPID(s.pid), Ready,
			Status(fmt.Sprintf("ready: generation 1, pid %d", s.pid)))
	case s.ownUnit:
		s.notifyLocked(ctx, "ready", MainPID(s.pid), Ready,
			Status(fmt.Sprintf("ready: generation %d, pid %d (took over from pid %d)", s.upg.Generation(), s.pid, s.upg.ParentPID())))
	}
	s.startPingerLocked()
}

// updateStoreLocked makes the file descriptor store hold what this
// generation serves: names passed or handed over but not claimed leave it,
// sockets this process created enter it (replacing any older socket under
// the name). Sockets adopted from systemd or a previous generation are
// there already. s.mu is held.
func (s *Service) updateStoreLocked(ctx context.Context, unclaimed []passedFD) {
	var gone []string
	for _, p := range unclaimed {
		gone = append(gone, p.name)
	}
	for _, name := range s.inherited {
		if _, ok := s.claimed[name]; !ok {
			gone = append(gone, name)
		}
	}
	for _, name := range gone {
		if _, ok := s.claimed[name]; ok {
			continue // another descriptor of the same name is in use
		}
		if err := s.n.RemoveStored(ctx, name); err != nil {
			s.log.Warn("systemd: cannot remove from the file descriptor store", "name", name, "err", err)
		}
	}
	for name, c := range s.claimed {
		if !c.fresh {
			continue
		}
		err := s.n.RemoveStored(ctx, name)
		if err == nil {
			err = s.n.Store(ctx, name, c.conn)
		}
		if err != nil {
			s.log.Warn("systemd: cannot put a socket into the file descriptor store", "name", name, "err", err)
		}
	}
}

// reclaim runs when an upgrade fails after the hand-over datagram was sent
// (the successor died between its READY and molt's acknowledgement): this
// process serves on, so it claims the main process back. systemd accepts
// that only with NotifyAccess=all; with NotifyAccess=main it already
// watches the dead successor, and the unit's Restart= policy applies.
func (s *Service) reclaim(e molt.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.main || s.stopping || s.n == nil || e.SuccessorPID == 0 {
		return
	}
	s.main = true
	ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
	defer cancel()
	s.notifyLocked(ctx, "reclaim", MainPID(e.PID))
}

// handOver is the Upgrader's commit hook: it runs once the successor said
// READY, while this process is still the main process and before the
// successor is acknowledged. One datagram makes the successor the main
// process and ends the reload, and the barrier waits until systemd has
// processed it, within ctx. Only then does the Upgrader acknowledge the
// successor's READY, so systemd never sees the main process exit before
// it knows the next one, and the successor is the main process before its
// Ready returns. From here on this process sends nothing.
func (s *Service) handOver(ctx context.Context, successorPID int) {
	s.mu.Lock()
	s.stopPingerLocked()
	sctx, cancel := context.WithTimeout(ctx, sendTimeout)
	took := time.Since(s.upgradeStarted).Round(time.Millisecond)
	if !sameUnit(successorPID) {
		// A taker of another unit: this unit keeps its main process,
		// which drains and exits, and the unit ends then.
		s.log.Info("systemd: the successor belongs to another unit; this unit ends when this process exits", "successor_pid", successorPID)
		if !s.stopping {
			s.notifyLocked(sctx, "hand-over to another unit", Ready,
				Status(fmt.Sprintf("draining: pid %d of another unit took over as generation %d", successorPID, s.upg.Generation()+1)))
		}
		cancel()
		s.main = false
		s.mu.Unlock()
		return
	}
	sent := !s.stopping && s.notifyLocked(sctx, "hand-over", MainPID(successorPID), Reloading, Ready,
		Status(fmt.Sprintf("ready: generation %d, pid %d (upgraded from pid %d in %v)",
			s.upg.Generation()+1, successorPID, s.pid, took)))
	cancel()
	s.main = false // a successor took over: this process only drains
	s.mu.Unlock()
	if !sent {
		return
	}
	bctx, cancel := context.WithTimeout(ctx, barrierTimeout)
	defer cancel()
	if err := s.n.Barrier(bctx); err != nil {
		s.log.Warn("systemd: no confirmation that systemd processed the hand-over", "successor_pid", successorPID, "err", err)
	}
}
