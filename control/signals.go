package control

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/moltgo/molt"
)

// SignalOptions configure [HandleSignals]. The zero value gives the
// conventional behaviour: SIGHUP upgrades, SIGTERM and SIGINT stop
// gracefully, a later stop signal is logged and ignored.
type SignalOptions struct {
	// Upgrade lists the signals that start an upgrade. Nil means SIGHUP;
	// an empty, non-nil slice means none.
	Upgrade []os.Signal

	// Stop lists the signals that stop the service gracefully. Nil means
	// SIGTERM and SIGINT; an empty, non-nil slice means none.
	Stop []os.Signal

	// OnStop is called, in a goroutine of its own, for the first stop
	// signal. Nil means [molt.Upgrader.Stop], which closes
	// [molt.Upgrader.Exit] with reason Stopped: the service then drains
	// and exits.
	OnStop func()

	// Force is called for every stop signal after the first, typically
	// while the service drains, with the signal that arrived. Set it to
	// exit at once — func(os.Signal) { os.Exit(1) } — when an operator
	// pressing Ctrl-C twice or a supervisor's second SIGTERM should cut a
	// drain short. Nil means later stop signals are logged and ignored.
	Force func(os.Signal)

	// UpgradeTimeout bounds an upgrade started by a signal, in addition to
	// the Upgrader's own ReadyTimeout. Zero means only ReadyTimeout.
	UpgradeTimeout time.Duration

	// Logger receives a line for every signal and for the result of every
	// upgrade it started. Nil means silent.
	Logger *slog.Logger
}

// HandleSignals makes signals drive upg: an upgrade signal starts
// [molt.Upgrader.Upgrade] (the result is logged; a signal that arrives
// during an upgrade is logged as refused, exactly one upgrade runs at a
// time), the first stop signal stops the service, and later stop signals
// call [SignalOptions.Force].
//
// Signal handling is opt-in: molt catches no signal unless this is called.
// Call it early, before the service is ready: until it is called, SIGHUP's
// default action terminates the process.
//
// The returned function stops the signal handling (the signals get their
// default actions back), cancels an upgrade a signal started (its
// successor is killed) and waits for the goroutines HandleSignals started,
// a running OnStop included. It may be called more than once.
func HandleSignals(upg *molt.Upgrader, opts SignalOptions) (stop func()) {
	h := &signalHandler{
		upg:     upg,
		opts:    opts,
		upgrade: opts.Upgrade,
		stop:    opts.Stop,
		log:     opts.Logger,
		sigs:    make(chan os.Signal, 8),
		done:    make(chan struct{}),
	}
	if h.upgrade == nil {
		h.upgrade = []os.Signal{syscall.SIGHUP}
	}
	if h.stop == nil {
		h.stop = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.base, h.cancel = context.WithCancel(context.Background())
	// Only the listed signals: Notify with none would also catch the
	// runtime's SIGURG.
	if all := slices.Concat(h.upgrade, h.stop); len(all) > 0 {
		signal.Notify(h.sigs, all...)
	}
	h.wg.Add(1)
	go h.loop()
	return sync.OnceFunc(h.close)
}

// signalHandler is the state of one HandleSignals call.
type signalHandler struct {
	upg           *molt.Upgrader
	opts          SignalOptions
	upgrade, stop []os.Signal
	log           *slog.Logger
	sigs          chan os.Signal
	done          chan struct{} // closed by close
	base          context.Context
	cancel        context.CancelFunc
	// wg counts loop and the goroutines it starts (upgrades, OnStop).
	wg    sync.WaitGroup
	stops int // stop signals seen; loop's own
}

// loop receives signals until close.
func (h *signalHandler) loop() {
	defer h.wg.Done()
	for {
		select {
		case sig := <-h.sigs:
			h.handle(sig)
		case <-h.done:
			return
		}
	}
}

func (h *signalHandler) handle(sig os.Signal) {
	switch {
	case slices.Contains(h.upgrade, sig):
		h.log.Info("control: signal", "signal", sig.String(), "action", "upgrade")
		h.wg.Go(func() { h.runUpgrade(sig) })
	case slices.Contains(h.stop, sig):
		h.stops++
		if h.stops == 1 {
			h.log.Info("control: signal", "signal", sig.String(), "action", "stop")
			h.wg.Go(func() {
				if h.opts.OnStop != nil {
					h.opts.OnStop()
				} else {
					h.upg.Stop()
				}
			})
			return
		}
		if h.opts.Force == nil {
			h.log.Warn("control: signal ignored: already stopping (SignalOptions.Force is not set)",
				"signal", sig.String(), "signals", h.stops)
			return
		}
		h.log.Warn("control: signal", "signal", sig.String(), "action", "force", "signals", h.stops)
		h.opts.Force(sig)
	}
}

// runUpgrade upgrades for a signal and logs the result.
func (h *signalHandler) runUpgrade(sig os.Signal) {
	ctx, cancel := h.base, context.CancelFunc(func() {})
	if h.opts.UpgradeTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, h.opts.UpgradeTimeout)
	}
	defer cancel()
	start := time.Now()
	err := h.upg.Upgrade(ctx)
	attrs := []any{"signal", sig.String(), "duration", time.Since(start)}
	var ce *molt.ChildError
	switch {
	case err == nil:
		if last := h.upg.Stats().LastUpgrade; last != nil {
			attrs = append(attrs, "successor_pid", last.SuccessorPID)
		}
		h.log.Info("control: upgrade succeeded", attrs...)
	case errors.As(err, &ce):
		h.log.Error("control: upgrade failed", append(attrs, "successor_pid", ce.PID, "err", err)...)
	default: // in progress, not ready, upgraded, stopped: nothing was started
		h.log.Warn("control: upgrade refused", append(attrs, "err", err)...)
	}
}

func (h *signalHandler) close() {
	signal.Stop(h.sigs)
	close(h.done)
	h.cancel()
	h.wg.Wait()
}
