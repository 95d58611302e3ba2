package systemd

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"time"
)

// watchdogEnv is what WATCHDOG_USEC and WATCHDOG_PID hold.
type watchdogEnv struct {
	usec, pid string
}

func readWatchdogEnv() watchdogEnv {
	return watchdogEnv{usec: os.Getenv("WATCHDOG_USEC"), pid: os.Getenv("WATCHDOG_PID")}
}

// parse returns the watchdog timeout systemd set for this process (self),
// or 0 if it watches no process or another one. As sd_watchdog_enabled(3):
// WATCHDOG_USEC unset means no watchdog, and WATCHDOG_PID, when set, must
// name this process. A generation started by molt also accepts its
// parent's PID (parent, 0 in generation 1): systemd set the variable for
// the first generation, and each generation passes it on with its own PID
// (see watchdogFromEnv), and becomes the main process that systemd expects
// pings from. Values systemd would never set are errors wrapping
// [ErrInvalidEnv].
func (e watchdogEnv) parse(self, parent int) (time.Duration, error) {
	if e.usec == "" {
		return 0, nil
	}
	us, ok := parseDecimal(e.usec)
	if !ok || us < 1 || us > math.MaxInt64/int64(time.Microsecond) {
		return 0, fmt.Errorf("%w: WATCHDOG_USEC=%q is not a timeout in microseconds", ErrInvalidEnv, e.usec)
	}
	if e.pid != "" {
		pid, ok := parseDecimal(e.pid)
		if !ok || pid < 1 {
			return 0, fmt.Errorf("%w: WATCHDOG_PID=%q is not a process ID", ErrInvalidEnv, e.pid)
		}
		if pid != int64(self) && (parent < 1 || pid != int64(parent)) {
			return 0, nil
		}
	}
	return time.Duration(us) * time.Microsecond, nil
}

// watchdogFromEnv reads the watchdog variables for this process and, if
// they are for it, sets WATCHDOG_PID to its PID: the next generation,
// started with this environment, then recognises its parent's PID.
// Processes the service starts otherwise see a PID not their own and ping
// nothing.
func watchdogFromEnv(parent int) (time.Duration, error) {
	e := readWatchdogEnv()
	d, err := e.parse(os.Getpid(), parent)
	if err != nil || d == 0 {
		return 0, err
	}
	if e.pid != "" {
		os.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	}
	return d, nil
}

// pingInterval is how often the watchdog is pinged: half its timeout, as
// sd_watchdog_enabled(3) advises.
func pingInterval(timeout time.Duration) time.Duration {
	return max(timeout/2, time.Millisecond)
}

// startPingerLocked starts the watchdog pinger if systemd watches this
// process, it is the main process, and no pinger runs. s.mu is held.
func (s *Service) startPingerLocked() {
	if s.watchdog <= 0 || s.n == nil || s.pingStop != nil || s.closed || !s.main {
		return
	}
	stop := make(chan struct{})
	s.pingStop = stop
	s.wg.Add(1)
	go s.ping(stop)
}

// stopPingerLocked tells the pinger to end; Close waits for it. s.mu is
// held.
func (s *Service) stopPingerLocked() {
	if s.pingStop != nil {
		close(s.pingStop)
		s.pingStop = nil
	}
}

// ping is the watchdog pinger: WATCHDOG=1 at once and then every half
// timeout, while this process is the main process. It is started by Attach
// or at Ready, and ends when told to (a hand-over to the successor, Stop,
// Close); Close waits for it. It sends with s.mu held, so no ping crosses a
// hand-over.
func (s *Service) ping(stop <-chan struct{}) {
	defer s.wg.Done()
	t := time.NewTicker(pingInterval(s.watchdog))
	defer t.Stop()
	for {
		s.mu.Lock()
		select {
		case <-stop:
			s.mu.Unlock()
			return
		default:
		}
		if s.main {
			ctx, cancel := context.WithTimeout(context.Background(), pingInterval(s.watchdog))
			if err := s.n.Notify(ctx, WatchdogPing); err != nil {
				s.log.Warn("systemd: watchdog ping failed", "err", err)
			}
			cancel()
		}
		s.mu.Unlock()
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}
