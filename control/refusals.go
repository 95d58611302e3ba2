package control

import (
	"log/slog"
	"sync"
	"time"
)

// refusalInterval is how often, at most, one peer's refused connections
// are logged after the first: a flood from one user writes a line per
// interval, with the count, instead of a line per connection.
const refusalInterval = 5 * time.Second

// refusalKey is what refused connections are counted by: the peer's user
// (its processes come and go) and the reason.
type refusalKey struct {
	uid  int
	code Code
}

// refusalCount is one key's refusals since its last line.
type refusalCount struct {
	n      int
	last   peer   // the latest refused peer, for the line's attributes
	reason string // and its reason
	timer  *time.Timer
}

// refusals logs refused connections, rate-limited: a key's first refusal
// at once, later ones counted and logged in one line when refusalInterval
// has passed since the key's previous line (then the next interval
// starts); a key that stayed quiet for a whole interval is forgotten. The
// map holds one entry per user refused in the last interval, so it is
// bounded by the users of the system. Safe for concurrent use.
type refusals struct {
	log      *slog.Logger
	interval time.Duration

	mu     sync.Mutex // protects the fields below; held while logging, so no line follows close
	counts map[refusalKey]*refusalCount
	closed bool
}

func newRefusals(log *slog.Logger, interval time.Duration) *refusals {
	return &refusals{log: log, interval: interval, counts: make(map[refusalKey]*refusalCount)}
}

// note records one refused connection.
func (r *refusals) note(p peer, code Code, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	k := refusalKey{uid: p.uid, code: code}
	if rc := r.counts[k]; rc != nil {
		rc.n++
		rc.last, rc.reason = p, reason
		return
	}
	r.lineLocked(p, code, reason, 1)
	rc := &refusalCount{}
	rc.timer = time.AfterFunc(r.interval, func() { r.tick(k) })
	r.counts[k] = rc
}

// tick ends an interval of k: it logs what was counted, or forgets k.
func (r *refusals) tick(k refusalKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rc := r.counts[k]
	if r.closed || rc == nil {
		return
	}
	if rc.n == 0 {
		delete(r.counts, k) // quiet: the next refusal is logged at once
		return
	}
	r.lineLocked(rc.last, k.code, rc.reason, rc.n)
	rc.n = 0
	rc.timer.Reset(r.interval)
}

// close logs what is counted and not logged yet, and stops the timers.
func (r *refusals) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	for k, rc := range r.counts {
		rc.timer.Stop()
		if rc.n > 0 {
			r.lineLocked(rc.last, k.code, rc.reason, rc.n)
		}
	}
	r.counts = nil
}

func (r *refusals) lineLocked(p peer, code Code, reason string, n int) {
	r.log.Warn("control: connection refused", append(p.attrs(), "code", string(code), "refused", n, "err", reason)...)
}
