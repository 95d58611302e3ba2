package h2count

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Cause is how a stream ended without an answer, or why a connection
// could not be made.
type Cause uint8

// The causes; see the package documentation. The ones before Aborted are
// failures.
const (
	GoAwayAboveLast Cause = iota
	Reset
	Status
	Closed
	Timeout
	Protocol
	Aborted // not a failure: open when the stop's grace ran out
	Dial    // not a stream: a connection that could not be made
	NumCauses
)

var causeNames = [NumCauses]string{
	GoAwayAboveLast: "goaway-above-last",
	Reset:           "reset",
	Status:          "status",
	Closed:          "closed",
	Timeout:         "timeout",
	Protocol:        "protocol",
	Aborted:         "aborted-at-stop",
	Dial:            "dial",
}

var causeTexts = [NumCauses]string{
	GoAwayAboveLast: "stream above a GOAWAY's last stream id: never processed",
	Reset:           "stream reset by the server (RST_STREAM)",
	Status:          "response status not 2xx",
	Closed:          "connection closed with the stream open",
	Timeout:         "no complete response within the stream timeout",
	Protocol:        "response broke the HTTP/2 protocol",
	Aborted:         "still open when the stop's grace ran out",
	Dial:            "connection could not be made",
}

// String returns the cause's short name, as in the package documentation.
func (c Cause) String() string {
	if c < NumCauses {
		return causeNames[c]
	}
	return fmt.Sprintf("cause(%d)", uint8(c))
}

// Failure reports whether a stream that ended with c failed (Aborted and
// Dial are not failures).
func (c Cause) Failure() bool { return c < Aborted }

// Failure is the error of a stream that failed, or of a connection that
// could not be made. Its Error text depends on the cause only; Detail
// says what happened to this one.
type Failure struct {
	Cause    Cause
	StreamID uint32 // 0 for Dial
	Detail   string // the stream, the connection and what the server did
}

func (f *Failure) Error() string { return f.Cause.String() + ": " + causeTexts[f.Cause] }

// Result is one stream that ended, answered or failed (aborted streams
// are only counted).
type Result struct {
	Start   time.Time     // its HEADERS were written
	Latency time.Duration // from Start to the end of the response or the failure
	Err     *Failure      // nil: answered
}

// Counts are the streams and connections of a run.
type Counts struct {
	Sent     int64 // streams whose HEADERS were written
	Answered int64 // complete 2xx responses
	// ByCause counts the streams that failed or were aborted, by cause,
	// and ByCause[Dial] the connections that could not be made.
	ByCause [NumCauses]int64
	// First is the Detail of the first of each cause.
	First   [NumCauses]string
	Conns   int64 // connections that completed the handshake (server SETTINGS read)
	GoAways int64 // GOAWAY frames read
}

// Failed returns the streams that failed, every cause together.
func (c Counts) Failed() int64 {
	var n int64
	for cause := range Aborted {
		n += c.ByCause[cause]
	}
	return n
}

// Aborted returns the streams aborted at the stop.
func (c Counts) Aborted() int64 { return c.ByCause[Aborted] }

// DialErrors returns the connections that could not be made.
func (c Counts) DialErrors() int64 { return c.ByCause[Dial] }

// Balanced reports whether every sent stream was accounted for:
// Sent = Answered + Failed + Aborted (true once Run has returned).
func (c Counts) Balanced() bool { return c.Sent == c.Answered+c.Failed()+c.Aborted() }

// Causes renders the non-zero failure causes, "goaway-above-last 3,
// reset 1", or "none".
func (c Counts) Causes() string {
	var parts []string
	for cause := range Aborted {
		if n := c.ByCause[cause]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", cause, n))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func (c Counts) String() string {
	return fmt.Sprintf("sent %d, answered %d, failed %d (%s), aborted-at-stop %d, dial errors %d, connections %d, GOAWAYs %d",
		c.Sent, c.Answered, c.Failed(), c.Causes(), c.Aborted(), c.DialErrors(), c.Conns, c.GoAways)
}

// Config is what Run does. Addr is required; every other zero field has
// the default its comment gives.
type Config struct {
	Addr string      // host:port to dial
	TLS  *tls.Config // nil: h2c with prior knowledge; else TLS with ALPN "h2" (NextProtos is set; ServerName defaults to Addr's host)

	Conns   int // connections at once (4)
	Streams int // concurrent streams per connection (8), and never above the server's limit

	Method    string // "GET"
	Path      string // "/"
	Authority string // :authority (Addr)
	Body      []byte // sent as DATA, with content-length; empty: END_STREAM on the HEADERS

	MaxStreams    int64         // streams to send in all; 0: no bound, until the context ends
	StreamTimeout time.Duration // HEADERS → complete response (10 s)
	StopGrace     time.Duration // the open streams' time after the context ended (2 s)
	DialTimeout   time.Duration // dial, TLS handshake and the server's SETTINGS (5 s)
	DialBackoff   time.Duration // a slot's wait after a dial error, or a connection that sent nothing (10 ms)

	// OnStream, if set, is called once for every stream that was answered
	// or failed, from the client's goroutines, concurrently, and without a
	// lock of the client's held; it must not block.
	OnStream func(Result)
	// OnDialError, if set, is called for every connection that could not
	// be made, under the same rules.
	OnDialError func(*Failure)
}

// maxFieldBytes bounds the request's :path and :authority, so that a
// header block always fits one frame of the smallest size a server may
// allow.
const maxFieldBytes = 4096

func (cfg Config) withDefaults() (Config, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.StreamTimeout, 10*time.Second)
	def(&cfg.StopGrace, 2*time.Second)
	def(&cfg.DialTimeout, 5*time.Second)
	def(&cfg.DialBackoff, 10*time.Millisecond)
	if cfg.Conns <= 0 {
		cfg.Conns = 4
	}
	if cfg.Streams <= 0 {
		cfg.Streams = 8
	}
	if cfg.Method == "" {
		cfg.Method = "GET"
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if cfg.Authority == "" {
		cfg.Authority = cfg.Addr
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	switch {
	case err != nil:
		return cfg, fmt.Errorf("h2count: Addr %q: %w", cfg.Addr, err)
	case !strings.HasPrefix(cfg.Path, "/"):
		return cfg, fmt.Errorf("h2count: Path %q does not start with /", cfg.Path)
	case len(cfg.Path) > maxFieldBytes || len(cfg.Authority) > maxFieldBytes:
		return cfg, errors.New("h2count: Path or Authority longer than 4096 bytes")
	}
	if cfg.TLS != nil {
		t := cfg.TLS.Clone()
		t.NextProtos = []string{"h2"}
		if t.ServerName == "" {
			t.ServerName = host
		}
		cfg.TLS = t
	}
	return cfg, nil
}

// Run runs the load until ctx ends (or MaxStreams were sent and ended) and
// returns the counts. It returns an error only for an invalid cfg.
func Run(ctx context.Context, cfg Config) (Counts, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Counts{}, err
	}
	cl := &client{cfg: cfg}
	cl.left.Store(cfg.MaxStreams)
	var wg sync.WaitGroup
	for range cfg.Conns {
		wg.Go(func() { cl.slot(ctx) })
	}
	wg.Wait()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.counts, nil
}

// client is one Run.
type client struct {
	cfg  Config
	left atomic.Int64 // streams still to send, if cfg.MaxStreams > 0

	mu     sync.Mutex // guards counts
	counts Counts
}

// take reserves one stream of the budget.
func (cl *client) take() bool {
	if cl.cfg.MaxStreams <= 0 {
		return true
	}
	for {
		n := cl.left.Load()
		if n <= 0 {
			return false
		}
		if cl.left.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func (cl *client) exhausted() bool { return cl.cfg.MaxStreams > 0 && cl.left.Load() <= 0 }

// slot keeps one connection: it dials, runs the connection until it
// ends, and dials again, until ctx ends or the budget is spent.
func (cl *client) slot(ctx context.Context) {
	for ctx.Err() == nil && !cl.exhausted() {
		c, err := cl.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			cl.note(Dial, err.Error())
			if cl.cfg.OnDialError != nil {
				cl.cfg.OnDialError(&Failure{Cause: Dial, Detail: err.Error()})
			}
			if !pause(ctx, cl.cfg.DialBackoff) {
				return
			}
			continue
		}
		if c.run(ctx) == 0 && !pause(ctx, cl.cfg.DialBackoff) {
			return
		}
	}
}

// pause waits d, or until ctx ends (false).
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// note counts one cause without a stream's result (Dial).
func (cl *client) note(cause Cause, detail string) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.noteLocked(cause, detail)
}

func (cl *client) noteLocked(cause Cause, detail string) {
	if cl.counts.ByCause[cause] == 0 {
		cl.counts.First[cause] = detail
	}
	cl.counts.ByCause[cause]++
}

// ended counts one stream that ended; r.Err nil: answered. Aborted
// streams come with cause Aborted and are not passed to OnStream.
func (cl *client) ended(r Result, aborted string) {
	cl.mu.Lock()
	switch {
	case aborted != "":
		cl.noteLocked(Aborted, aborted)
	case r.Err == nil:
		cl.counts.Answered++
	default:
		cl.noteLocked(r.Err.Cause, r.Err.Detail)
	}
	cl.mu.Unlock()
	if aborted == "" && cl.cfg.OnStream != nil {
		cl.cfg.OnStream(r)
	}
}

func (cl *client) add(field *int64) {
	cl.mu.Lock()
	*field++
	cl.mu.Unlock()
}
