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

// eventLog collects the events that every process of the service prints
// on the pipe they share, in arrival order.
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
		fmt.Fprintf(os.Stderr, "soak: reading the servers' output: %v\n", err)
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

// wait returns the first event at index from or later for which match is
// true, and its index, waiting for it until ctx ends or the output ends.
func (l *eventLog) wait(ctx context.Context, from int, match func(serverEvent) bool) (serverEvent, int, error) {
	for {
		l.mu.Lock()
		for i := from; i < len(l.events); i++ {
			if match(l.events[i]) {
				e := l.events[i]
				l.mu.Unlock()
				return e, i, nil
			}
		}
		from = len(l.events)
		ended, changed := l.ended, l.changed
		l.mu.Unlock()
		if ended {
			return serverEvent{}, -1, errOutputEnded
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return serverEvent{}, -1, context.Cause(ctx)
		}
	}
}

// find returns the first event at index from or later for which match is
// true, without waiting.
func (l *eventLog) find(from int, match func(serverEvent) bool) (serverEvent, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events[min(from, len(l.events)):] {
		if match(e) {
			return e, true
		}
	}
	return serverEvent{}, false
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

// len returns the number of events so far: a position to wait from.
func (l *eventLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.events)
}
