// Package grpcload upgrades the example server under RPC load and counts
// the outcome of every RPC. The test in the example's main package and
// cmd/grpcload share it: the first runs the counting client under -race,
// the second also drives load generators from outside the project (ghz,
// fortio) through the same upgrades.
package grpcload

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Server is a running chain of the example server's generations. It reads
// the lines every generation prints on the shared standard output ("ready
// pid=… addr=…", "exit pid=… served=…") and knows which generation is the
// current one, so Upgrade signals the right process.
type Server struct {
	Addr string // the address every generation serves

	cmd    *exec.Cmd
	events chan event
	pid    int          // the current generation
	live   map[int]bool // generations ready and not yet exited, for Kill
	ready  int          // ready lines seen so far
	served int64        // RPCs answered, summed over the exit lines
	least  int64        // the fewest RPCs one generation answered, -1 before any exit
}

type event struct {
	kind   string // "ready" or "exit"
	fields map[string]string
}

// Start runs the server binary bin with args and waits for its first
// generation to be ready.
func Start(bin string, timeout time.Duration, args ...string) (*Server, error) {
	// A pipe of our own rather than StdoutPipe: every generation writes to
	// it, and the first one exits long before the last, so reading must not
	// depend on the first process's Wait.
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = w
	cmd.Stderr = os.Stderr
	err = cmd.Start()
	w.Close() // the generations hold the write end; EOF comes when the last one exits
	if err != nil {
		r.Close()
		return nil, err
	}
	s := &Server{cmd: cmd, events: make(chan event, 64), live: map[int]bool{}, least: -1}
	go s.read(r)
	ready, err := s.next("ready", timeout)
	if err != nil {
		s.Kill()
		return nil, err
	}
	s.Addr = ready.fields["addr"]
	return s, nil
}

func (s *Server) read(r io.ReadCloser) {
	defer r.Close()
	defer close(s.events)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || (f[0] != "ready" && f[0] != "exit") {
			continue
		}
		ev := event{kind: f[0], fields: map[string]string{}}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			ev.fields[k] = v
		}
		s.events <- ev
	}
}

// next consumes lines until one of kind arrives, booking every exit line
// on the way; it notes the pid of each ready line and makes it current.
func (s *Server) next(kind string, timeout time.Duration) (event, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return event{}, fmt.Errorf("server output ended while waiting for a %s line", kind)
			}
			pid, err := strconv.Atoi(ev.fields["pid"])
			if err != nil {
				return event{}, fmt.Errorf("%s line without a pid: %v", ev.kind, ev.fields)
			}
			switch ev.kind {
			case "ready":
				s.pid = pid
				s.live[pid] = true
				s.ready++
			case "exit":
				delete(s.live, pid)
				n, _ := strconv.ParseInt(ev.fields["served"], 10, 64)
				s.served += n
				if s.least < 0 || n < s.least {
					s.least = n
				}
			}
			if ev.kind == kind {
				return ev, nil
			}
		case <-deadline.C:
			return event{}, fmt.Errorf("no %s line within %v", kind, timeout)
		}
	}
}

// Upgrade asks the current generation to upgrade (SIGHUP) and waits until
// its successor is ready, which the successor prints only after the
// hand-off committed: from then on the old generation drains.
func (s *Server) Upgrade(timeout time.Duration) error {
	if err := syscall.Kill(s.pid, syscall.SIGHUP); err != nil {
		return err
	}
	_, err := s.next("ready", timeout)
	return err
}

// Generations returns how many generations have been ready so far.
func (s *Server) Generations() int { return s.ready }

// LeastServed returns the fewest RPCs a generation that exited answered:
// above 0 shows that the load reached every generation.
func (s *Server) LeastServed() int64 { return s.least }

// Stop stops the current generation and waits until every generation has
// printed its exit line; it returns the RPCs they answered in all.
func (s *Server) Stop(timeout time.Duration) (served int64, err error) {
	if err := syscall.Kill(s.pid, syscall.SIGTERM); err != nil {
		return 0, err
	}
	for len(s.live) > 0 {
		if _, err := s.next("exit", timeout); err != nil {
			return s.served, err
		}
	}
	// The first generation is our child; the others were its descendants
	// and have exited (each printed its exit line last).
	if err := s.cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			return s.served, err
		}
		return s.served, fmt.Errorf("first generation: %v", err)
	}
	return s.served, nil
}

// Kill ends every generation that has not printed its exit line; for
// clean-up after a failure.
func (s *Server) Kill() {
	for pid := range s.live {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
}
