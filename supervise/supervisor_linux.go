package supervise

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/systemd"
	"golang.org/x/sys/unix"
)

// Supervisor runs a program and replaces it without closing its sockets.
// Create it with [New], start the first instance with
// [Supervisor.Start], upgrade with [Supervisor.Upgrade], stop with
// [Supervisor.Stop], wait with [Supervisor.Done] and release it with
// [Supervisor.Close]. It implements [control.Service].
type Supervisor struct {
	opts   Options
	log    *slogLogger
	socks  []*sock
	notify *notifySocket
	sd     *systemd.Notifier // nil unless the supervisor runs under systemd's notify protocol
	prober *prober
	pid    int
	began  time.Time

	mu        sync.Mutex
	cur       *instance
	prev      int                    // the PID of the instance cur replaced
	alive     map[*instance]struct{} // started and not reaped
	upgrading *instance              // the new instance of the running upgrade, or a marker while it starts
	upStart   time.Time
	stopping  bool
	stopCh    chan struct{} // closed by the stop: ends waits
	done      chan struct{} // closed when stopped and every instance is gone
	code      int           // the exit status, set before done closes
	last      *control.UpgradeResult
	upgrades  int
	failed    int
	wg        sync.WaitGroup // the goroutines of instances and the notify reader
}

var upgradeMarker = &instance{}

// New opens the sockets and the notify socket. Nothing runs until
// [Supervisor.Start].
func New(opts Options) (*Supervisor, error) {
	opts.setDefaults()
	if opts.Program == "" {
		return nil, errors.New("supervise: no program to run")
	}
	r := theReaper()
	s := &Supervisor{
		opts:   opts,
		log:    &slogLogger{opts.Logger},
		prober: newProber(opts.Ready),
		pid:    os.Getpid(),
		alive:  map[*instance]struct{}{},
		stopCh: make(chan struct{}),
		done:   make(chan struct{}),
	}
	if r.subreapErr != nil {
		s.log.Warn("supervise: not a child subreaper: orphans of the program are not reaped here", "err", r.subreapErr)
	}
	var err error
	if s.socks, err = openSockets(&s.opts); err != nil {
		return nil, err
	}
	if s.notify, err = openNotify(); err != nil {
		closeSockets(s.socks)
		return nil, err
	}
	if n, err := systemd.NewNotifier(); err == nil {
		s.sd = n
	} else if !errors.Is(err, systemd.ErrNoNotifySocket) {
		s.log.Warn("supervise: NOTIFY_SOCKET unusable; not notifying systemd", "err", err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.notify.serve(s.onNotify)
	}()
	for _, sk := range s.socks {
		s.log.Info("supervise: socket", "name", sk.name, "network", sk.network, "address", sk.addr)
	}
	return s, nil
}

// Start starts the first instance and waits until it is ready. It fails
// if the instance exits, misses the grace period or ctx ends first; the
// instance is killed with its process group and reaped then, and the
// Supervisor is stopped ([Supervisor.Done] is closed; its ExitCode is
// the instance's, or 1).
func (s *Supervisor) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.cur != nil || s.stopping || s.upgrading != nil {
		s.mu.Unlock()
		return errors.New("supervise: Start called twice")
	}
	s.upgrading = upgradeMarker
	s.mu.Unlock()
	s.began = time.Now()
	s.sdNotify(systemd.Status("starting " + s.opts.Program))
	inst, err := s.launch(ctx, 1)
	s.mu.Lock()
	s.upgrading = nil
	if err != nil {
		code := 1
		if inst != nil && inst.ws.Exited() && inst.ws.ExitStatus() != 0 {
			code = exitCode(inst.ws)
		}
		s.stopLocked(code)
		s.mu.Unlock()
		s.sdNotify(systemd.Status("failed to start: " + err.Error()))
		return err
	}
	if s.stopping { // stopped while it started
		s.mu.Unlock()
		s.retire(inst, s.opts.StopSignal)
		return molt.ErrStopped
	}
	s.cur = inst
	s.mu.Unlock()
	s.log.Info("supervise: ready", "pid", inst.pid, "generation", inst.gen, "took", time.Since(inst.started))
	s.sdNotify(systemd.Ready, systemd.Status(s.statusLine()))
	return nil
}

// launch starts generation gen and waits for it to be ready. On failure
// it kills and reaps it and returns it (nil if it never started) with
// the error.
func (s *Supervisor) launch(ctx context.Context, gen uint64) (*instance, error) {
	inst, err := s.startInstance(gen)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.alive[inst] = struct{}{}
	if s.upgrading != nil {
		s.upgrading = inst
	}
	s.mu.Unlock()
	s.wg.Add(1)
	go s.watch(inst)
	s.log.Info("supervise: instance started", "pid", inst.pid, "generation", gen)

	waitCtx, cancel := context.WithTimeout(ctx, s.opts.Grace)
	defer cancel()
	var probeErr chan error
	stopProbe := func() error { return nil }
	if s.prober != nil {
		probeErr = make(chan error, 1)
		addr := s.opts.Ready.Addr
		if s.opts.Ready.Private() {
			addr = inst.probe
		}
		pctx, pcancel := context.WithCancel(waitCtx)
		go func() { probeErr <- s.prober.run(pctx, addr, inst.markReady) }()
		var once sync.Once
		var last error
		stopProbe = func() error {
			once.Do(func() { pcancel(); last = <-probeErr })
			return last
		}
		defer stopProbe()
	}
	var cause error
	select {
	case <-inst.ready:
		select {
		case <-inst.exited: // ready, and gone already
		default:
			return inst, nil
		}
		cause = fmt.Errorf("%w: it said it was ready, then ended: %s", ErrExited, exitStatus(inst.ws))
	case <-inst.exited:
		cause = fmt.Errorf("%w: %s", ErrExited, exitStatus(inst.ws))
	case <-s.stopCh:
		cause = fmt.Errorf("%w: the supervisor is stopping", molt.ErrStopped)
	case <-waitCtx.Done():
		cause = context.Cause(waitCtx)
		if ctx.Err() == nil {
			cause = fmt.Errorf("%w (%v)", ErrGrace, s.opts.Grace)
		}
	}
	if perr := stopProbe(); perr != nil && errors.Is(cause, ErrGrace) {
		cause = fmt.Errorf("%w; the last probe: %v", cause, perr)
	}
	theReaper().signal(inst, unix.SIGKILL, true)
	<-inst.exited
	return inst, cause
}

// watch waits for inst's end and updates the state.
func (s *Supervisor) watch(inst *instance) {
	defer s.wg.Done()
	<-inst.exited
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.alive, inst)
	level := s.log.Info
	if inst == s.cur {
		level = s.log.Warn
		if !s.stopping {
			s.log.Warn("supervise: the serving instance ended by itself; stopping", "pid", inst.pid, "status", exitStatus(inst.ws))
		}
		s.stopLocked(exitCode(inst.ws))
		s.code = exitCode(inst.ws)
	}
	level("supervise: instance ended", "pid", inst.pid, "generation", inst.gen, "status", exitStatus(inst.ws))
	s.finishLocked()
}

// stopLocked enters stopping with the exit status code, unless stopping
// already.
func (s *Supervisor) stopLocked(code int) {
	if s.stopping {
		return
	}
	s.stopping = true
	s.code = code
	close(s.stopCh)
	s.finishLocked()
}

func (s *Supervisor) finishLocked() {
	if s.stopping && len(s.alive) == 0 && s.upgrading == nil && !isClosed(s.done) {
		close(s.done)
	}
}

// Upgrade starts a new instance on the same sockets (if generation
// ifGeneration serves, when it is not zero), waits until it is ready
// within the grace period, makes it the serving one, then stops the old
// one: its stop signal, and after the drain time SIGKILL to its process
// group. It returns once the new instance serves, or failed and was
// reaped; the old one serves on then. The result says what happened in
// both cases. It implements [control.Service].
func (s *Supervisor) Upgrade(ctx context.Context, ifGeneration uint64) (*control.UpgradeResult, error) {
	s.mu.Lock()
	switch {
	case s.stopping:
		s.mu.Unlock()
		return nil, molt.ErrStopped
	case s.upgrading != nil && s.cur == nil:
		s.mu.Unlock()
		return nil, molt.ErrNotReady
	case s.upgrading != nil:
		started := s.upStart
		s.mu.Unlock()
		return nil, fmt.Errorf("%w (started %v ago)", molt.ErrUpgradeInProgress, time.Since(started).Round(time.Millisecond))
	case s.cur == nil:
		s.mu.Unlock()
		return nil, molt.ErrNotReady
	case ifGeneration != 0 && ifGeneration != s.cur.gen:
		s.mu.Unlock()
		return nil, molt.ErrGenerationChanged
	}
	old := s.cur
	s.upgrading, s.upStart = upgradeMarker, time.Now()
	s.mu.Unlock()
	start := time.Now()
	s.log.Info("supervise: upgrade started", "pid", old.pid, "generation", old.gen)
	s.sdNotify(systemd.Reloading, systemd.Status(fmt.Sprintf("upgrading: generation %d (pid %d) serves", old.gen, old.pid)))

	inst, err := s.launch(ctx, old.gen+1)
	res := &control.UpgradeResult{OK: err == nil, PID: old.pid, Generation: old.gen, Started: start, Duration: time.Since(start)}
	s.mu.Lock()
	s.upgrading = nil
	if err == nil && s.stopping {
		err = fmt.Errorf("%w: the supervisor is stopping", molt.ErrStopped)
		s.mu.Unlock()
		s.retire(inst, s.opts.StopSignal)
		s.mu.Lock()
	}
	if err != nil {
		res.OK = false
		res.Error, res.Reason = "upgrade failed: "+err.Error(), err.Error()
		res.Stage = "init"
		if inst == nil {
			res.Stage = "start"
		} else {
			res.SuccessorPID = inst.pid
			res.ExitStatus = exitStatus(inst.ws)
			if inst.ws.Exited() {
				c := inst.ws.ExitStatus()
				res.ExitCode = &c
			}
		}
		s.failed++
		s.last = res
		s.finishLocked()
		s.mu.Unlock()
		s.log.Warn("supervise: upgrade failed; the old instance serves on", "pid", old.pid, "successor_pid", res.SuccessorPID, "err", err)
		s.sdNotify(systemd.Ready, systemd.Status(fmt.Sprintf("%s; last upgrade failed: %s", s.statusLine(), err)))
		if errors.Is(err, molt.ErrStopped) {
			return nil, err
		}
		return res, err
	}
	s.cur, s.prev = inst, old.pid
	s.upgrades++
	res.SuccessorPID = inst.pid
	s.last = res
	s.mu.Unlock()
	s.log.Info("supervise: upgraded", "pid", inst.pid, "generation", inst.gen, "old_pid", old.pid, "took", res.Duration)
	s.retire(old, s.opts.StopSignal)
	s.sdNotify(systemd.Ready, systemd.Status(s.statusLine()))
	return res, nil
}

// retire sends inst sig and, if it has not ended after the drain time,
// kills its process group.
func (s *Supervisor) retire(inst *instance, sig syscall.Signal) {
	inst.mu.Lock()
	inst.stopping = true
	inst.mu.Unlock()
	if err := theReaper().signal(inst, sig, false); err != nil {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(s.opts.Drain)
		defer t.Stop()
		select {
		case <-inst.exited:
		case <-t.C:
			s.log.Warn("supervise: instance did not exit within the drain time; killing its process group", "pid", inst.pid, "drain", s.opts.Drain)
			theReaper().signal(inst, unix.SIGKILL, true)
		}
	}()
}

// Stop stops the serving instance with the stop signal (SIGKILL to its
// process group after the drain time), cancels a running upgrade and
// lets the supervisor end when every instance is gone. It implements
// [control.Service].
func (s *Supervisor) Stop() { s.StopWith(s.opts.StopSignal) }

// StopWith is [Supervisor.Stop] with sig for the stop signal (to forward
// the SIGTERM or SIGINT the supervisor got).
func (s *Supervisor) StopWith(sig syscall.Signal) {
	s.mu.Lock()
	cur := s.cur
	first := !s.stopping
	s.stopLocked(0)
	s.mu.Unlock()
	if first {
		s.log.Info("supervise: stopping", "signal", sig.String())
		s.sdNotify(systemd.Stopping, systemd.Status("stopping"))
	}
	if cur != nil {
		s.retire(cur, sig)
	}
}

// Signal forwards sig to the serving instance.
func (s *Supervisor) Signal(sig syscall.Signal) error {
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	if cur == nil {
		return errors.New("supervise: no instance serves")
	}
	return theReaper().signal(cur, sig, false)
}

// Done is closed when the supervisor has stopped and every instance is
// gone.
func (s *Supervisor) Done() <-chan struct{} { return s.done }

// ExitCode is the status to exit with after Done: the serving instance's
// (its exit status, or 128 plus the signal that killed it), or 1 if the
// first instance failed to start.
func (s *Supervisor) ExitCode() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code
}

// Close stops the supervisor if it runs, waits until every instance is
// gone and releases the sockets.
func (s *Supervisor) Close() error {
	s.mu.Lock()
	started := s.cur != nil || s.upgrading != nil || len(s.alive) > 0
	s.mu.Unlock()
	if started {
		s.Stop()
	} else {
		s.mu.Lock()
		s.stopLocked(s.code)
		s.mu.Unlock()
	}
	<-s.done
	s.notify.close()
	s.wg.Wait()
	s.prober.close()
	closeSockets(s.socks)
	return nil
}

// OrphansReaped is the number of processes other than instances that
// this process reaped (orphans re-parented to it).
func OrphansReaped() uint64 { return theReaper().orphansReaped() }

// Status describes the serving instance. It implements
// [control.Service].
func (s *Supervisor) Status() control.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := control.Status{PID: s.pid, State: "starting", Started: s.began, FailedUpgrades: s.failed, LastUpgrade: s.last, Listeners: []control.Listener{}}
	if s.cur != nil {
		st.PID, st.Generation, st.Started, st.ParentPID = s.cur.pid, s.cur.gen, s.cur.started, s.prev
		st.Upgrades = s.cur.gen - 1
		st.State = "ready"
	}
	switch {
	case s.stopping:
		st.State = "stopping"
	case s.upgrading != nil && s.cur != nil:
		st.State = "upgrading"
	}
	st.Uptime = time.Since(st.Started)
	for _, sk := range s.socks {
		st.Listeners = append(st.Listeners, control.Listener{Kind: "listener", Network: sk.network, Address: sk.addr, Name: sk.name})
	}
	return st
}

// onNotify handles a notification from pid.
func (s *Supervisor) onNotify(pid int, msg []byte) {
	s.mu.Lock()
	var inst *instance
	for in := range s.alive {
		if in.pid == pid {
			inst = in
			break
		}
	}
	if inst == nil {
		if pgid, err := unix.Getpgid(pid); err == nil {
			for in := range s.alive {
				if in.pid == pgid {
					inst = in
					break
				}
			}
		}
	}
	s.mu.Unlock()
	if inst == nil {
		s.log.Debug("supervise: notification from a process that is no instance: dropped", "sender_pid", pid)
		return
	}
	for line := range strings.SplitSeq(string(msg), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "READY":
			switch {
			case v != "1":
			case s.opts.Ready != nil:
				// The probe decides (gunicorn says READY=1 before its
				// workers run): the notification is only logged.
				s.log.Debug("supervise: READY=1 from an instance; waiting for the probe", "pid", inst.pid)
			default:
				inst.markReady()
			}
		case "STATUS":
			inst.mu.Lock()
			inst.status = v
			inst.mu.Unlock()
			s.log.Info("supervise: instance status", "pid", inst.pid, "status", v)
		case "STOPPING":
			if v == "1" {
				inst.mu.Lock()
				inst.stopping = true
				inst.mu.Unlock()
				s.log.Info("supervise: instance is stopping", "pid", inst.pid)
			}
		}
	}
}

func (s *Supervisor) statusLine() string {
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	if cur == nil {
		return "no instance serves"
	}
	line := fmt.Sprintf("generation %d (pid %d) serves", cur.gen, cur.pid)
	cur.mu.Lock()
	if cur.status != "" {
		line += ": " + cur.status
	}
	cur.mu.Unlock()
	return line
}

func (s *Supervisor) sdNotify(a ...systemd.Assignment) {
	if s.sd == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.sd.Notify(ctx, a...); err != nil {
		s.log.Warn("supervise: notify systemd", "err", err)
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
