package main

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// sample is what a server process measures of itself for GET /debug/soak.
type sample struct {
	PID            int    `json:"pid"`
	Gen            uint64 `json:"gen"`
	Goroutines     int    `json:"goroutines"`      // all of them
	ConnGoroutines int    `json:"conn_goroutines"` // serving connections: part of Goroutines
	FDs            int    `json:"fds"`             // all open descriptors
	ConnFDs        int    `json:"conn_fds"`        // connected TCP sockets: part of FDs
	RSSKB          int64  `json:"rss_kb"`          // resident set size; -1 if unknown here
	// Own names the goroutines that do not serve a connection, each by
	// the function it was started with and its state, sorted: what
	// differs between two samples is what grew.
	Own []string `json:"own"`
	// OwnFDs describes the descriptors that are not TCP connections, each
	// by number and kind ("3 tcp listener"), in order.
	OwnFDs []string `json:"own_fds"`
}

// ownFDs are the descriptors the process holds for itself: all but its
// client connections.
func (s sample) ownFDs() int { return s.FDs - s.ConnFDs }

// ownGoroutines are the goroutines that do not serve a connection.
func (s sample) ownGoroutines() int { return s.Goroutines - s.ConnGoroutines }

// measure takes one sample of this process.
func measure(gen uint64) (sample, error) {
	s := sample{PID: os.Getpid(), Gen: gen, RSSKB: -1}
	s.Goroutines, s.ConnGoroutines, s.Own = countGoroutines(goroutineDump())
	var err error
	s.FDs, s.ConnFDs, s.OwnFDs, err = countFDs()
	if err != nil {
		return s, err
	}
	if kb, ok := readRSS(); ok {
		s.RSSKB = kb
	}
	return s, nil
}

// goroutineDump returns the stacks of all goroutines, as runtime.Stack
// prints them.
func goroutineDump() []byte {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}

// connMarks identify net/http's per-connection goroutines in a dump: the
// one serving a connection (handlers included) and the one that reads
// ahead while a handler runs, by their functions or, for a goroutine not
// started yet (whose stack shows only a wrapper), by their creators.
var connMarks = [][]byte{
	[]byte("\nnet/http.(*conn).serve("),
	[]byte("\nnet/http.(*connReader).backgroundRead("),
	[]byte("\ncreated by net/http.(*Server).Serve in "),
	[]byte("\ncreated by net/http.(*connReader).startBackgroundRead in "),
}

// countGoroutines counts the goroutines of a runtime.Stack dump, and among
// them those serving a connection, and names the others (see
// describeGoroutine). Goroutines are separated by a blank line, and each
// begins with "goroutine N [state]:".
func countGoroutines(dump []byte) (total, conn int, own []string) {
	for g := range bytes.SplitSeq(dump, []byte("\n\n")) {
		if !bytes.HasPrefix(g, []byte("goroutine ")) {
			continue
		}
		total++
		if slices.ContainsFunc(connMarks, func(f []byte) bool { return bytes.Contains(g, f) }) {
			conn++
			continue
		}
		own = append(own, describeGoroutine(string(g)))
	}
	slices.Sort(own)
	return total, conn, own
}

// describeGoroutine names one goroutine of a dump by the function it was
// started with (its outermost frame) and its state, e.g.
// "os/signal.loop [syscall]"; the goroutine running main is "main.main".
// Durations such as ", 2 minutes" are left out of the state.
func describeGoroutine(g string) string {
	header, rest, _ := strings.Cut(g, "\n")
	state := ""
	if i, j := strings.LastIndexByte(header, '['), strings.LastIndexByte(header, ']'); i >= 0 && j > i {
		state, _, _ = strings.Cut(header[i+1:j], ",")
	}
	fn := "?"
	for line := range strings.Lines(rest) {
		line = strings.TrimRight(line, "\n")
		if line == "" || line[0] == '\t' || strings.HasPrefix(line, "created by ") ||
			strings.HasPrefix(line, "...") || strings.HasPrefix(line, "runtime.goexit(") {
			continue // not a frame, or the frame below a goroutine not started yet
		}
		fn = line // the last frame seen is the outermost
	}
	if i := strings.LastIndexByte(fn, '('); i > 0 {
		fn = fn[:i] // the arguments
	}
	return fn + " [" + state + "]"
}

// parseVmRSS returns the VmRSS line of a /proc/PID/status file, in kB.
func parseVmRSS(status []byte) (int64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != "VmRSS" {
			continue
		}
		f := strings.Fields(value)
		if len(f) != 2 || f[1] != "kB" {
			return 0, false
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		return kb, err == nil && kb >= 0
	}
	return 0, false
}
