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

// eventLog collects the events every generation of one server chain
// prints on the pipe they share, in arrival order.
type eventLog struct {
	mu      sync.Mutex
	events  []serverEvent
	ended   bool          // end-of-file: no process holds the pipe any more
	changed chan struct{} // closed and replaced on every change
	done    chan struct{} // closed at end-of-file
}

func newEventLog() *eventLog {
	return &eventLog{changed: make(chan struct{}), done: make(chan struct{})}
}

// read parses JSON lines from r until end-of-file. Other lines go to
// standard error, so that they are seen.
func (l *eventLog) read(r io.ReadCloser) {
	defer r.Close()
	defer close(l.done)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var e serverEvent
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
		fmt.Fprintf(os.Stderr, "drainbench: reading the servers' output: %v\n", err)
	}
	l.mu.Lock()
	l.ended = true
	l.notifyLocked()
	l.mu.Unlock()
}

func (l *eventLog) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

var errOutputEnded = errors.New("the servers' output ended")

// wait returns the first event for which match is true, waiting for it
// until ctx ends or the output ends.
func (l *eventLog) wait(ctx context.Context, match func(serverEvent) bool) (serverEvent, error) {
	from := 0
	for {
		l.mu.Lock()
		for _, e := range l.events[from:] {
			if match(e) {
				l.mu.Unlock()
				return e, nil
			}
		}
		from = len(l.events)
		ended, changed := l.ended, l.changed
		l.mu.Unlock()
		if ended {
			return serverEvent{}, errOutputEnded
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return serverEvent{}, context.Cause(ctx)
		}
	}
}

// all returns a copy of the events named kind.
func (l *eventLog) all(kind string) []serverEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []serverEvent
	for _, e := range l.events {
		if e.Event == kind {
			out = append(out, e)
		}
	}
	return out
}

func readyOf(gen uint64) func(serverEvent) bool {
	return func(e serverEvent) bool { return e.Event == "ready" && e.Gen == gen }
}

// failedUpgradeOf matches the report of a failed upgrade of gen, or an
// error of any generation: both end a wait for gen's successor.
func failedUpgradeOf(gen uint64) func(serverEvent) bool {
	return func(e serverEvent) bool {
		return (e.Event == "upgrade" && e.Gen == gen && !e.OK) || e.Event == "error"
	}
}
