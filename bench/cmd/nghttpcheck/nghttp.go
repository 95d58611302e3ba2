package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/moltgo/molt/internal/reap"
)

// stderrKeep bounds the unexpected lines of an nghttp's standard error
// kept for the report.
const stderrKeep = 10

// The lines nghttp prints on standard error in a run that a GOAWAY cut
// short, and for the driver's self-signed certificate. nghttp opens no new
// connection after a GOAWAY: each request it had not sent yet fails with
// notAllowed (its HEADERS never reached the wire), and at the end it
// prints notProcessed. Whether the requests it did send were answered is
// for the parser to say. Any other line is a failure: nghttp reports some
// (a refused connection, a failed handshake) only there.
var (
	notProcessed = regexp.MustCompile(`^Some requests were not processed\. total=(\d+), processed=(\d+)$`)
	notAllowed   = regexp.MustCompile(`^\[ERROR\] request \S+ failed: request HEADERS is not allowed$`)
	certWarning  = regexp.MustCompile(`^\[WARNING\] Certificate verification failed: `)
)

// stderrLog is what an nghttp printed on standard error.
type stderrLog struct {
	summary          bool // notProcessed was printed
	total, processed int  // its figures
	notSent          int  // notAllowed lines
	certWarnings     int
	unexpected       []string // the first stderrKeep other lines
	moreUnexpected   int      // other lines beyond those
}

// line sorts one line of standard error.
func (e *stderrLog) line(s string) {
	switch {
	case notAllowed.MatchString(s):
		e.notSent++
	case certWarning.MatchString(s):
		e.certWarnings++
	default:
		if m := notProcessed.FindStringSubmatch(s); m != nil && !e.summary {
			e.summary = true
			e.total, _ = strconv.Atoi(m[1]) // \d+ from a count: it fits
			e.processed, _ = strconv.Atoi(m[2])
			return
		}
		if len(e.unexpected) < stderrKeep {
			e.unexpected = append(e.unexpected, s)
		} else {
			e.moreUnexpected++
		}
	}
}

// run is one nghttp process: one connection, -m streams.
type run struct {
	proto string // "h2c" or "tls"
	index int    // among the runs of its protocol in its upgrade
	url   string
	pid   int

	log     *runLog
	started chan struct{} // closed at the first complete response
	output  chan error    // the parse of standard output ended, with its error
	errDone chan struct{} // standard error ended; then stderr is complete
	stderr  stderrLog
}

// startRun starts `nghttp -nv -m streams url`. Its standard output is
// parsed as it comes (and copied to save, if not ""), its standard error
// kept.
func startRun(r *reap.Reaper, nghttp, proto string, index int, url string, streams int, save string) (*run, error) {
	ru := &run{
		proto: proto, index: index, url: url,
		log:     newRunLog(),
		started: make(chan struct{}),
		output:  make(chan error, 1),
		errDone: make(chan struct{}),
	}
	var once sync.Once
	ru.log.onAnswer = func() { once.Do(func() { close(ru.started) }) }

	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	// -n discards the bodies, -v prints every frame: the parser's input.
	cmd := exec.Command(nghttp, "-nv", "-m", strconv.Itoa(streams), url)
	cmd.Stdout, cmd.Stderr = outW, errW
	err = r.Start(cmd)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start %s: %w", nghttp, err)
	}
	ru.pid = cmd.Process.Pid

	out, closeOut := tee(outR, save, ru, "stdout")
	errOut, closeErr := tee(errR, save, ru, "stderr")
	go func() {
		defer outR.Close()
		defer closeOut()
		err := ru.log.read(out)
		if err != nil {
			// Keep draining, so that nghttp never blocks on a full pipe.
			io.Copy(io.Discard, out)
		}
		ru.output <- err
	}()
	go func() {
		defer close(ru.errDone)
		defer errR.Close()
		defer closeErr()
		ru.readStderr(errOut)
	}()
	return ru, nil
}

// tee copies what is read from r into DIR/PROTO-INDEX-pidPID.EXT if dir
// is not "", and returns the reader and the function that closes the copy.
func tee(r io.Reader, dir string, ru *run, ext string) (io.Reader, func()) {
	if dir == "" {
		return r, func() {}
	}
	name := filepath.Join(dir, fmt.Sprintf("%s-%d-pid%d.%s", ru.proto, ru.index, ru.pid, ext))
	f, err := os.Create(name)
	if err != nil {
		// The process runs already: its output is still read and judged.
		fmt.Fprintf(os.Stderr, "nghttpcheck: -save: %v\n", err)
		return r, func() {}
	}
	return io.TeeReader(r, f), func() {
		if err := f.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "nghttpcheck: -save: %v\n", err)
		}
	}
}

func (ru *run) name() string {
	return fmt.Sprintf("%s #%d (pid %d, %s)", ru.proto, ru.index, ru.pid, ru.url)
}

func (ru *run) readStderr(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		ru.stderr.line(sc.Text())
	}
	if err := sc.Err(); err != nil {
		ru.stderr.line("(reading standard error: " + err.Error() + ")")
	}
}

// wait waits until the process has exited and both its outputs have ended,
// killing it if ctx ends first. It returns how the process ended, and the
// parse error.
func (ru *run) wait(ctx context.Context, r *reap.Reaper) (status string, parseErr error, err error) {
	status, err = r.WaitPID(ctx, ru.pid)
	if err != nil {
		if kerr := r.Signal(ru.pid, syscall.SIGKILL); kerr != nil && !errors.Is(kerr, os.ErrProcessDone) {
			return "", nil, fmt.Errorf("%w; SIGKILL: %v", err, kerr)
		}
		// Bounded: SIGKILL cannot be ignored, and the reaper is prompt.
		wctx, cancel := context.WithTimeout(context.Background(), killGrace)
		defer cancel()
		if status, err = r.WaitPID(wctx, ru.pid); err != nil {
			return "", nil, fmt.Errorf("not reaped %v after SIGKILL: %w", killGrace, err)
		}
		err = fmt.Errorf("did not finish in time: killed (%s)", status)
	}
	// The process is gone, and with it the pipes' only writer: both
	// outputs end now, unless it left a child holding them (nghttp does
	// not fork).
	parseErr = <-ru.output
	<-ru.errDone
	return status, parseErr, err
}

// outcome checks how the process ended against what its outputs say.
// nghttp 1.52 exits 0 even when requests were not processed; an exit
// status of 1 is accepted with its summary line, for versions that report
// that in the status. Its summary must agree with the parser: "processed"
// counts the complete responses, and every request was either sent or
// refused before it was (notAllowed). A run that got no GOAWAY checked
// nothing: -m is too small for the upgrade to reach it.
func (ru *run) outcome(status string, streams int, v verdict) []string {
	var problems []string
	e := &ru.stderr
	if status != "exit status 0" && (status != "exit status 1" || !e.summary) {
		problems = append(problems, fmt.Sprintf("nghttp ended with %s", status))
	}
	total, processed := streams, streams
	if e.summary {
		total, processed = e.total, e.processed
	}
	if total != streams || processed != v.answered || e.notSent+v.sent != total {
		problems = append(problems, fmt.Sprintf(
			"nghttp's account (total=%d, processed=%d, %d never sent) does not match -m %d and the parser's (%d sent, %d answered)",
			total, processed, e.notSent, streams, v.sent, v.answered))
	}
	if len(e.unexpected) > 0 {
		more := ""
		if e.moreUnexpected > 0 {
			more = fmt.Sprintf(" (and %d more lines)", e.moreUnexpected)
		}
		problems = append(problems, "nghttp's standard error: "+strings.Join(e.unexpected, " | ")+more)
	}
	if e.certWarnings > 0 && ru.proto != "tls" {
		problems = append(problems, "a certificate warning on a cleartext run")
	}
	if v.sent == 0 {
		problems = append(problems, "no stream's HEADERS were sent (or the output's format is not the one the parser knows)")
	}
	if len(v.goaways) == 0 {
		problems = append(problems, "no GOAWAY received: the run ended before the upgrade reached it (raise -m)")
	}
	return problems
}
