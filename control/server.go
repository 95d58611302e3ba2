package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moltgo/molt"
)

const (
	// DefaultMode is the socket file's permission when [Options.Mode] is zero.
	DefaultMode os.FileMode = 0o600

	// maxConns bounds the connections a server serves at once; one more is
	// answered with CodeBusy and closed.
	maxConns = 64
	// idleTimeout bounds the wait for a request on an open connection.
	idleTimeout = 10 * time.Second
	// writeTimeout bounds the write of one reply.
	writeTimeout = 5 * time.Second
)

// Options configure a [Server]. The zero value is ready to use; every field
// says what its zero value means.
type Options struct {
	// Mode is the permission of the socket file, set whenever a generation
	// starts serving it. Zero means [DefaultMode] (0600). The file mode is
	// a second line of defence: every connection's peer credentials are
	// checked whatever it is.
	Mode os.FileMode

	// Group, a group name or numeric ID, lets processes whose effective
	// group is that group use the socket, besides the service's own user
	// and root, and becomes the socket file's group (Mode must grant the
	// group access, for example 0660). Empty means no group.
	Group string

	// Logger receives the server's events (connections refused, requests
	// served, malformed input). Nil means silent.
	Logger *slog.Logger

	// UpgradeTimeout bounds an upgrade started by a request, in addition
	// to the Upgrader's own ReadyTimeout. Zero means only ReadyTimeout
	// bounds it. A client that disconnects never cancels an upgrade.
	UpgradeTimeout time.Duration

	// OnStop is called once, after a stop request was answered, to stop
	// the service. It must not call [Server.Close], which waits for it.
	// Nil means [molt.Upgrader.Stop], which closes [molt.Upgrader.Exit]
	// with reason Stopped: the service then drains and exits.
	OnStop func()
}

// Server serves the control protocol on a Unix socket of the Upgrader's
// inventory. Create it with [Listen]; it answers requests from the moment
// the Upgrader is ready, stops accepting when a successor took over or the
// Upgrader stopped, and is released with [Server.Close].
type Server struct {
	upg  *molt.Upgrader
	ln   net.Listener
	path string // absolute socket path, or "@name" for an abstract socket
	log  *slog.Logger
	opts Options
	uid  int // effective user ID of this process: allowed peers
	gid  int // Options.Group's ID; -1 if none
	hist *os.File

	// base is the parent of every upgrade a request starts; Close cancels
	// it. It is the one operation-scoped context this long-lived value
	// holds (like http.Server's BaseContext).
	base   context.Context
	cancel context.CancelFunc

	ready     chan struct{} // closed when the Upgrader is ready: accepting begins
	readyOnce sync.Once
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	stopOnce  sync.Once // runs OnStop

	// wg counts the goroutines of the server: the accept loop, the watcher
	// and one per connection. Close waits for them.
	wg sync.WaitGroup

	removeObserver func()

	mu             sync.Mutex        // protects the fields below
	conns          map[net.Conn]bool // open connections: true while a request is being answered
	closed         bool
	upgradeStarted time.Time // when the running upgrade began; zero when none runs
}

// Listen opens the control socket at path through upg — inherited from the
// previous generation if it served the same path, new otherwise — and
// starts serving it. Call it before [molt.Upgrader.Ready], as with every
// inherited socket: Ready closes inherited sockets nobody claimed.
//
// A new socket file gets [Options.Mode] without a moment of wider
// permissions on Linux (the mode is set on the socket before it is bound);
// elsewhere it is bound under the process's umask and changed right after,
// and in that moment only the peer-credential check, which applies to
// every connection, keeps others out. The socket's directory should not be
// writable by others. A stale socket file of a crashed run is replaced; a
// path another live process serves is left alone and Listen fails. An
// inherited socket keeps its file, whose mode and group are set again.
//
// The server answers nothing before the Upgrader is ready: connections
// made earlier wait in the socket's queue. In a successor that is right:
// until it is ready its parent answers on the same socket.
//
// Listen fails with [ErrNotSupported] where peer credentials cannot be
// read, and with the Upgrader's errors (such as [molt.ErrStopped]). The
// caller must call [Server.Close] when done.
func Listen(upg *molt.Upgrader, path string, opts Options) (*Server, error) {
	if !credSupported {
		return nil, fmt.Errorf("%w: cannot read a peer's credentials on %s, so the socket would be unauthenticated", ErrNotSupported, runtime.GOOS)
	}
	mode := opts.Mode
	if mode == 0 {
		mode = DefaultMode
	}
	if mode&^os.ModePerm != 0 {
		return nil, fmt.Errorf("control: Options.Mode %v has bits other than permissions", mode)
	}
	gid := -1
	if opts.Group != "" {
		var err error
		if gid, err = lookupGroup(opts.Group); err != nil {
			return nil, err
		}
	}
	lc := &net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		presetMode(rc, mode)
		return nil
	}}
	ln, err := upg.ListenWith(context.Background(), lc, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("control: listen on %s: %w", path, err)
	}
	ok := false
	defer func() {
		if !ok {
			ln.Close()
		}
	}()
	abs := path
	if !strings.HasPrefix(path, "@") {
		if abs, err = filepath.Abs(path); err != nil {
			return nil, fmt.Errorf("control: %w", err)
		}
		if err := setOwnership(abs, mode, gid); err != nil {
			return nil, err
		}
	}

	s := &Server{
		upg:   upg,
		ln:    ln,
		path:  abs,
		log:   opts.Logger,
		opts:  opts,
		uid:   os.Geteuid(),
		gid:   gid,
		ready: make(chan struct{}),
		done:  make(chan struct{}),
		conns: make(map[net.Conn]bool),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.hist = openHistory(upg, s.log)
	if s.hist != nil {
		updateHistory(s.hist, func(h *historyRecord) { h.Control = abs })
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.removeObserver = upg.Observe(s.observe)
	if upg.State() != molt.StateStarting {
		s.markReady() // Ready was called before Listen: nothing else will tell
	}
	ok = true

	s.wg.Add(2)
	go s.watch()
	go s.serve()
	s.log.Info("control: listening", "path", abs, "mode", fmt.Sprintf("%#o", mode),
		"generation", upg.Generation(), "pid", os.Getpid())
	return s, nil
}

// Path returns the socket's absolute path ("@name" for an abstract socket).
func (s *Server) Path() string { return s.path }

// Status returns what a status request would answer now.
func (s *Server) Status() Status {
	st := StatusOf(s.upg)
	for i := range st.Listeners {
		if l := &st.Listeners[i]; l.Network == "unix" && l.Address == s.path {
			l.Control = true
		}
	}
	return st
}

// Close stops the server: it stops accepting, closes every connection
// waiting for a request, lets the requests being answered finish (an
// upgrade a request started is cancelled: its successor is killed and the
// reply says so; a reply already known, such as that of an upgrade that
// just succeeded, is still sent) and waits until every goroutine of the
// server has ended. The control socket leaves the inventory, and its file
// is removed unless another generation serves it (a successor after an
// upgrade, or the parent of a successor that is not ready yet); after the
// Upgrader's Stop it is gone already. Close may be called more than once;
// later calls wait for the first and return nil.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		s.cancel()
		s.removeObserver() // not under s.mu: the observer takes it
		s.mu.Lock()
		s.closed = true
		var idle []net.Conn
		for c, busy := range s.conns {
			if !busy {
				idle = append(idle, c)
			}
		}
		s.mu.Unlock()
		if cerr := s.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = fmt.Errorf("control: close %s: %w", s.path, cerr)
		}
		for _, c := range idle {
			c.Close() // its goroutine's read fails; busy ones end after their reply
		}
	})
	s.wg.Wait()
	return err
}

// observe follows the Upgrader's events. It runs in the goroutine that
// caused them and must not block.
func (s *Server) observe(e molt.Event) {
	switch e.Kind {
	case molt.EventReady:
		s.markReady()
	case molt.EventUpgradeStarted:
		s.mu.Lock()
		s.upgradeStarted = e.Time
		s.mu.Unlock()
	case molt.EventUpgradeSucceeded, molt.EventUpgradeFailed:
		s.mu.Lock()
		s.upgradeStarted = time.Time{}
		s.mu.Unlock()
		if s.hist != nil {
			// Before the successor's Ready returns: it reads this record.
			r := resultOfEvent(e)
			updateHistory(s.hist, func(h *historyRecord) {
				if h.Last != nil && h.Last.PID == r.PID && h.Last.Started.Equal(r.Started) {
					return // recorded already, by another Server of this Upgrader
				}
				if !r.OK {
					h.Failed++
				}
				h.Last = &r
			})
		}
	}
}

func (s *Server) markReady() { s.readyOnce.Do(func() { close(s.ready) }) }

// watch stops accepting when this generation's work is over: a successor
// serves the socket now (its copy keeps the queue open), or the Upgrader
// stopped. It ends then, or at Close.
func (s *Server) watch() {
	defer s.wg.Done()
	select {
	case <-s.upg.Exit():
		if s.upg.Reason() == molt.Upgraded {
			s.log.Info("control: a successor took over; no longer accepting on the control socket", "path", s.path)
		}
		s.ln.Close()
	case <-s.done:
	}
}

// serve is the accept loop. It starts when the Upgrader is ready and ends
// when the listener is closed (by watch, Stop or Close).
func (s *Server) serve() {
	defer s.wg.Done()
	select {
	case <-s.ready:
	case <-s.done:
		return
	case <-s.upg.Exit():
		return
	}
	var delay time.Duration // backoff after a failed accept, as net/http does
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || isDone(s.done) || isDone(s.upg.Exit()) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("control: accept failed; retrying", "err", err, "delay", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
			// molt wraps accepted connections so that HTTP servers can hand
			// idle ones to a successor; a control connection never moves.
			c = nc.NetConn()
		}
		switch s.track(c) {
		case trackOK:
			go s.serveConn(c)
		case trackBusy:
			s.writeReply(c, Reply{V: Version, Code: CodeBusy, Error: fmt.Sprintf("too many connections (%d); try again", maxConns)})
			c.Close()
		default:
			c.Close()
		}
	}
}

type trackResult int

const (
	trackOK trackResult = iota
	trackBusy
	trackClosed
)

// track registers a new connection and its goroutine.
func (s *Server) track(c net.Conn) trackResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return trackClosed
	case len(s.conns) >= maxConns:
		return trackBusy
	}
	s.conns[c] = true // busy until it waits for a request
	s.wg.Add(1)       // the accept loop's own count keeps wg above zero here
	return trackOK
}

// setBusy records whether c's request is being answered, and reports
// false if the server is closed: an idle connection must then end, and a
// request that has just arrived is not answered.
func (s *Server) setBusy(c net.Conn, busy bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = busy
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// serveConn checks the peer and answers its requests, one per line, until
// it closes the connection, sends something unreadable, stays idle for
// idleTimeout, or asks to stop.
func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer s.untrack(c)

	p, err := peerOf(c)
	if err == nil {
		err = s.authorize(p)
	}
	if err != nil {
		s.log.Warn("control: connection refused", append(p.attrs(), "err", err)...)
		s.writeReply(c, Reply{V: Version, Code: CodePermissionDenied, Error: "permission denied: " + err.Error()})
		return
	}

	r := bufio.NewReaderSize(c, MaxRequestSize)
	for {
		if !s.setBusy(c, false) {
			return
		}
		c.SetReadDeadline(time.Now().Add(idleTimeout))
		line, rerr := r.ReadSlice('\n')
		if !s.setBusy(c, true) {
			return
		}
		if errors.Is(rerr, bufio.ErrBufferFull) {
			s.log.Warn("control: request too large", append(p.attrs(), "limit", MaxRequestSize)...)
			s.writeReply(c, Reply{V: Version, Code: CodeTooLarge, Error: fmt.Sprintf("request longer than %d bytes", MaxRequestSize)})
			return
		}
		if rerr != nil && (!errors.Is(rerr, io.EOF) || len(line) == 0) {
			return // closed, reset or idle
		}
		if len(strings.TrimSpace(string(line))) > 0 {
			rep := s.handle(line, p)
			if !s.writeReply(c, rep) {
				return
			}
			if rep.Op == OpStop && rep.OK {
				c.Close() // the client has its answer; now stop
				s.stopOnce.Do(s.stopService)
				return
			}
		}
		if rerr != nil {
			return // the last request arrived without a newline
		}
	}
}

// handle answers one request line.
func (s *Server) handle(line []byte, p peer) Reply {
	start := time.Now()
	req, err := decodeRequest(line)
	rep := Reply{V: Version, Op: req.Op, PID: os.Getpid(), Generation: s.upg.Generation()}
	var er *errRequest
	switch {
	case errors.As(err, &er):
		rep.Code, rep.Error = er.code, er.msg
		s.log.Warn("control: bad request", append(p.attrs(), "code", string(er.code), "err", er.msg)...)
		return rep
	case s.replaced():
		rep.Code = CodeReplaced
		rep.Error = fmt.Sprintf("pid %d (generation %d) was replaced by a successor; connect again", rep.PID, rep.Generation)
	case req.Op == OpStatus:
		st := s.Status()
		rep.Code, rep.Status = CodeOK, &st
	case req.Op == OpStop:
		rep.Code = CodeOK
	case req.Op == OpUpgrade:
		s.upgrade(&rep)
	}
	rep.OK = rep.Code == CodeOK
	level := slog.LevelInfo
	switch {
	case rep.Code != CodeOK:
		level = slog.LevelWarn
	case req.Op == OpStatus:
		level = slog.LevelDebug // polled by monitoring: not worth a line each
	}
	attrs := append(p.attrs(), "op", req.Op, "code", string(rep.Code), "duration", time.Since(start))
	if rep.Upgrade != nil {
		attrs = append(attrs, "successor_pid", rep.Upgrade.SuccessorPID)
	}
	if rep.Error != "" {
		attrs = append(attrs, "err", rep.Error)
	}
	s.log.Log(context.Background(), level, "control: request", attrs...)
	return rep
}

// upgrade runs an upgrade for a request and fills the reply with its
// result. The upgrade belongs to the server, not to the connection: a
// client that goes away does not cancel it.
func (s *Server) upgrade(rep *Reply) {
	ctx, cancel := s.base, context.CancelFunc(func() {})
	if s.opts.UpgradeTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, s.opts.UpgradeTimeout)
	}
	defer cancel()
	start := time.Now()
	err := s.upg.Upgrade(ctx)
	res := &UpgradeResult{PID: rep.PID, Generation: rep.Generation, Started: start, Duration: time.Since(start)}
	var ce *molt.ChildError
	switch {
	case err == nil:
		res.OK = true
		// Safe to read: after a successful upgrade no other can start.
		if last := s.upg.Stats().LastUpgrade; last != nil && last.Err == nil {
			res.SuccessorPID, res.Started, res.Duration = last.SuccessorPID, last.Started, last.Duration
		}
		rep.Code, rep.Upgrade = CodeOK, res
	case errors.As(err, &ce):
		describeFailure(res, err)
		rep.Code, rep.Error, rep.Upgrade = CodeFailed, err.Error(), res
	case errors.Is(err, molt.ErrUpgradeInProgress):
		rep.Code, rep.Error = CodeInProgress, s.inProgressMessage()
	case errors.Is(err, molt.ErrNotReady):
		rep.Code, rep.Error = CodeNotReady, "the service is not ready yet"
	case errors.Is(err, molt.ErrUpgraded):
		rep.Code = CodeReplaced
		rep.Error = fmt.Sprintf("pid %d (generation %d) was replaced by a successor; connect again", rep.PID, rep.Generation)
	case errors.Is(err, molt.ErrStopped):
		rep.Code, rep.Error = CodeStopping, "the service is stopping"
	default:
		describeFailure(res, err)
		rep.Code, rep.Error, rep.Upgrade = CodeFailed, err.Error(), res
	}
}

func (s *Server) inProgressMessage() string {
	s.mu.Lock()
	started := s.upgradeStarted
	s.mu.Unlock()
	if started.IsZero() {
		return "another upgrade is in progress"
	}
	return fmt.Sprintf("another upgrade is in progress (started %v ago)", time.Since(started).Round(time.Millisecond))
}

// replaced reports whether a successor took over from this generation.
func (s *Server) replaced() bool {
	return isDone(s.upg.Exit()) && s.upg.Reason() == molt.Upgraded
}

func (s *Server) stopService() {
	s.log.Info("control: stopping the service as requested", "pid", os.Getpid(), "generation", s.upg.Generation())
	if s.opts.OnStop != nil {
		s.opts.OnStop()
		return
	}
	s.upg.Stop()
}

// writeReply writes rep as one line, within writeTimeout, and reports
// whether it was written.
func (s *Server) writeReply(c net.Conn, rep Reply) bool {
	rep.OK = rep.Code == CodeOK
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := c.Write(encodeLine(rep))
	return err == nil
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
