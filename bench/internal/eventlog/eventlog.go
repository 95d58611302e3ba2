// Package eventlog collects the JSON event lines that every process of a
// benchmarked service prints on the one pipe they share, and lets a driver
// wait for the event it needs.
package eventlog

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

// emitMu serialises this process's Emit calls.
var emitMu sync.Mutex

// Emit prints event on standard output as one JSON line in a single
// write, so that the lines of the processes sharing the pipe never
// interleave. It is the writing side of Log.
func Emit(event any) {
	b, err := json.Marshal(event)
	if err != nil {
		panic(err) // the event types are plain structs: they always marshal
	}
	emitMu.Lock()
	defer emitMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

// ErrOutputEnded is returned by Wait when no process holds the pipe any
// more and no event matched.
var ErrOutputEnded = errors.New("the servers' output ended")

// Log holds the events of type E read so far, in arrival order.
type Log[E any] struct {
	name func(E) string // the event's name; "" for a line that is not an event

	mu      sync.Mutex
	events  []E
	ended   bool          // end-of-file: no process holds the pipe any more
	changed chan struct{} // closed and replaced on every change
	done    chan struct{} // closed at end-of-file
}

// New returns an empty Log; name returns an event's name, "" for a JSON
// line that is not an event.
func New[E any](name func(E) string) *Log[E] {
	return &Log[E]{name: name, changed: make(chan struct{}), done: make(chan struct{})}
}

// Read parses JSON lines from r until end-of-file. Other lines go to
// standard error, so that they are seen.
func (l *Log[E]) Read(r io.ReadCloser) {
	defer r.Close()
	defer close(l.done)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var e E
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || l.name(e) == "" {
			fmt.Fprintf(os.Stderr, "server output: %s\n", sc.Text())
			continue
		}
		l.mu.Lock()
		l.events = append(l.events, e)
		l.notifyLocked()
		l.mu.Unlock()
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "reading the servers' output: %v\n", err)
	}
	l.mu.Lock()
	l.ended = true
	l.notifyLocked()
	l.mu.Unlock()
}

func (l *Log[E]) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// Done is closed when the output has ended.
func (l *Log[E]) Done() <-chan struct{} { return l.done }

// Wait returns the first event at index from or later for which match is
// true, and its index, waiting for it until ctx ends or the output ends.
func (l *Log[E]) Wait(ctx context.Context, from int, match func(E) bool) (E, int, error) {
	var zero E
	for {
		l.mu.Lock()
		for i := from; i < len(l.events); i++ {
			if match(l.events[i]) {
				e := l.events[i]
				l.mu.Unlock()
				return e, i, nil
			}
		}
		from = max(from, len(l.events))
		ended, changed := l.ended, l.changed
		l.mu.Unlock()
		if ended {
			return zero, -1, ErrOutputEnded
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return zero, -1, context.Cause(ctx)
		}
	}
}

// Find returns the first event at index from or later for which match is
// true, without waiting.
func (l *Log[E]) Find(from int, match func(E) bool) (E, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events[min(from, len(l.events)):] {
		if match(e) {
			return e, true
		}
	}
	var zero E
	return zero, false
}

// All returns a copy of the events called name.
func (l *Log[E]) All(name string) []E {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []E
	for _, e := range l.events {
		if l.name(e) == name {
			out = append(out, e)
		}
	}
	return out
}

// Len returns the number of events so far: a position to wait from.
func (l *Log[E]) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.events)
}
