package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// The phases of an upgrade under load (molt; tableflip shows only when
// its Upgrade was called and its successor's moments), from moments the two
// generations note (Unix nanoseconds, one clock for every process of the
// machine) and report in their events: the old generation in its
// "upgrade" event (markStarted, markReadySeen), the new one in its
// "ready" event (the rest). The driver subtracts them (upgradePhases).
const (
	markUpgradeCall = "upgradecall" // old: Upgrade called (the signal has reached the code)
	markStarted     = "started"     // old: molt logged that the successor started (its exec succeeded)
	markReadySeen   = "readyseen"   // old: the successor's READY read (the commit hook runs)
	markEntered     = "entered"     // new: the server's code began (the Go runtime has started)
	markNew         = "new"         // new: molt.New returned (the HELLO read)
	markListened    = "listened"    // new: its listeners claimed
	markReadyCall   = "readycall"   // new: Ready called (the servers set up and serving)
	markReady       = "ready"       // new: Ready returned (the ACK read)
)

// phaseNames are the phases in order, each from the mark before (the
// trigger, for the first) to its own mark.
var phaseNames = []struct{ name, from, to string }{
	{"to the successor's code", "", markEntered},
	{"signal to Upgrade", "", markUpgradeCall},
	{"Upgrade to the successor's code", markUpgradeCall, markEntered},
	{"signal+fork/exec", "", markStarted},
	{"runtime start", markStarted, markEntered},
	{"New (HELLO)", markEntered, markNew},
	{"claim", markNew, markListened},
	{"server set-up", markListened, markReadyCall},
	{"READY to the parent", markReadyCall, markReadySeen},
	{"ACK to the successor", markReadySeen, markReady},
	{"Ready call", markReadyCall, markReady},
}

// marks is one process's record of moments.
type marks struct {
	mu sync.Mutex
	at map[string]int64
}

func newMarks() *marks { return &marks{at: map[string]int64{}} }

func (m *marks) note(name string) {
	t := time.Now().UnixNano()
	m.mu.Lock()
	m.at[name] = t
	m.mu.Unlock()
}

// take returns the moments noted and starts a new record.
func (m *marks) take() map[string]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	at := m.at
	m.at = map[string]int64{}
	return at
}

// startedHandler notes markStarted when molt logs that a successor
// started, and passes every record on.
type startedHandler struct {
	slog.Handler
	m *marks
}

func (h startedHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h startedHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "molt: successor started" {
		h.m.note(markStarted)
	}
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}
func (h startedHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return startedHandler{h.Handler.WithAttrs(as), h.m}
}
func (h startedHandler) WithGroup(g string) slog.Handler {
	return startedHandler{h.Handler.WithGroup(g), h.m}
}

// upgradePhases returns the phases of one upgrade: trigger, the old
// generation's marks and the new one's. A phase whose marks are missing
// is left out.
func upgradePhases(trigger time.Time, old, new map[string]int64) map[string]time.Duration {
	at := map[string]int64{"": trigger.UnixNano()}
	for k, v := range old {
		at[k] = v
	}
	for k, v := range new {
		at[k] = v
	}
	out := map[string]time.Duration{}
	for _, p := range phaseNames {
		from, ok1 := at[p.from]
		to, ok2 := at[p.to]
		if ok1 && ok2 {
			out[p.name] = time.Duration(to - from)
		}
	}
	return out
}

// phaseLine renders the p50 and p99 of each phase over the successful
// upgrades that reported them; "" if none did.
func phaseLine(ups []upgradeResult) string {
	var parts []string
	for _, p := range phaseNames {
		var ds []time.Duration
		for _, u := range ups {
			if d, ok := u.phases[p.name]; ok && u.err == "" {
				ds = append(ds, d)
			}
		}
		if len(ds) > 0 {
			parts = append(parts, fmt.Sprintf("%s %s / %s", p.name, ms(quantile(ds, 0.5)), ms(quantile(ds, 0.99))))
		}
	}
	return strings.Join(parts, "; ")
}
