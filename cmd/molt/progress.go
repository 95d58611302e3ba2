package main

import (
	"fmt"
	"io"
	"time"

	"github.com/moltgo/molt/control"
)

// progress shows, on a terminal, that molt is waiting: a spinner, what it
// waits for and for how long, rewritten in place and erased at the end.
type progress struct {
	w        io.Writer
	done     chan struct{} // closed by stop
	finished chan struct{} // closed when run has erased the line
}

// progressDelay keeps quick requests from flashing a progress line.
const progressDelay = 200 * time.Millisecond

func startProgress(w io.Writer, op control.Op) *progress {
	label := map[control.Op]string{
		control.OpUpgrade: "upgrading",
		control.OpStop:    "stopping",
		control.OpStatus:  "asking for the status",
		control.OpCheck:   "checking the new binary",
	}[op]
	p := &progress{w: w, done: make(chan struct{}), finished: make(chan struct{})}
	go p.run(label) // ends at stop
	return p
}

func (p *progress) run(label string) {
	defer close(p.finished)
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	shown := false
	for i := 0; ; i++ {
		select {
		case <-p.done:
			if shown {
				io.WriteString(p.w, "\r\033[K")
			}
			return
		case <-tick.C:
			if took := time.Since(start); took >= progressDelay {
				fmt.Fprintf(p.w, "\r%c %s... %s\033[K", `|/-\`[i%4], label, took.Round(100*time.Millisecond))
				shown = true
			}
		}
	}
}

// stop erases the progress line and returns when it is gone. A nil
// progress does nothing.
func (p *progress) stop() {
	if p == nil {
		return
	}
	close(p.done)
	<-p.finished
}
