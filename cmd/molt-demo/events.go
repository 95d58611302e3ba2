package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// event is one JSON line a server generation prints on standard output.
// The server writes the fields of its kind of event; the driver reads them
// all into this one type.
type event struct {
	Event string `json:"event"` // "ready", "upgrade" or "exit"
	PID   int    `json:"pid"`
	Gen   uint64 `json:"gen"`

	Addr string `json:"addr"` // ready: the listener's address

	OK         bool   `json:"ok"`          // upgrade: the successor is ready
	Error      string `json:"error"`       // upgrade: why it failed
	DurationUS int64  `json:"duration_us"` // upgrade: time spent in Upgrade

	Reason     string `json:"reason"`      // exit: why this generation stopped
	DrainError string `json:"drain_error"` // exit: why the drain did not finish
}

// eventLog collects the events of every generation, in the order they
// arrived on the shared pipe, for the driver to wait on.
type eventLog struct {
	mu      sync.Mutex
	events  []event
	ended   bool          // the pipe reached end-of-file: no server holds it
	changed chan struct{} // closed and replaced on every change
	done    chan struct{} // closed when the pipe ended
}

func newEventLog() *eventLog {
	return &eventLog{changed: make(chan struct{}), done: make(chan struct{})}
}

// read parses JSON lines from r until it ends. Anything else a server
// prints goes to standard error, so that it is seen, not lost.
func (l *eventLog) read(r io.Reader) {
	defer func() {
		l.mu.Lock()
		l.ended = true
		l.notifyLocked()
		l.mu.Unlock()
		close(l.done)
	}()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Event == "" {
			fmt.Fprintf(os.Stderr, "server output: %s\n", sc.Text())
			continue
		}
		l.mu.Lock()
		l.events = append(l.events, e)
		l.notifyLocked()
		l.mu.Unlock()
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "molt-demo: reading the servers' output: %v\n", err)
	}
}

func (l *eventLog) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// len returns the number of events so far: an index for waitFrom.
func (l *eventLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.events)
}

// errOutputEnded says that every server closed the pipe without printing
// the event waited for.
var errOutputEnded = errors.New("the servers' output ended")

// waitFrom returns the first event at index from or later for which match
// is true, waiting for it until ctx ends or the pipe ends.
func (l *eventLog) waitFrom(ctx context.Context, from int, match func(event) bool) (event, error) {
	for {
		l.mu.Lock()
		for _, e := range l.events[min(from, len(l.events)):] {
			if match(e) {
				l.mu.Unlock()
				return e, nil
			}
		}
		from = len(l.events)
		ended, changed := l.ended, l.changed
		l.mu.Unlock()
		if ended {
			return event{}, errOutputEnded
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return event{}, context.Cause(ctx)
		}
	}
}

// all returns a copy of the events of one kind.
func (l *eventLog) all(kind string) []event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []event
	for _, e := range l.events {
		if e.Event == kind {
			out = append(out, e)
		}
	}
	return out
}

// latestReady returns the ready event of the newest generation.
func (l *eventLog) latestReady() (event, bool) {
	var best event
	found := false
	for _, e := range l.all("ready") {
		if !found || e.Gen > best.Gen {
			best, found = e, true
		}
	}
	return best, found
}
