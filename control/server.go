package control

import (
	"bytes"
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
	"github.com/moltgo/molt/internal/peercred"
)

const (
	// DefaultMode is the socket file's permission when [Options.Mode] is zero.
	DefaultMode os.FileMode = 0o600

	// idleTimeout bounds the wait for a request on an open connection.
	idleTimeout = 10 * time.Second
	// writeTimeout bounds the write of one reply.
	writeTimeout = 5 * time.Second
)

// Options configure a [Server]. The zero value is ready to use; every field
// says what its zero value means.
type Options struct {
	// Mode is the permission of the socket file, which it gets as it is
	// created. Zero means [DefaultMode] (0600). The file mode is a second
	// line of defence: every connection's peer credentials are checked
	// whatever it is.
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

	refusals *refusals // refused connections, logged rate-limited

	// base is the parent of every upgrade a request starts; Close cancels
	// it. It is the one operation-scoped context this long-lived value
	// holds (like http.Server's BaseContext).
	base   context.Context
	cancel context.CancelFunc

	ready      chan struct{} // closed when the Upgrader is ready: accepting begins
	readyOnce  sync.Once
	done       chan struct{} // closed by Close
	closeOnce  sync.Once
	stopOnce   sync.Once // runs OnStop
	retireOnce sync.Once // runs startRetire

	// wg counts the goroutines of the server: the accept loop, the watcher,
	// one per connection, and retire. Close waits for them.
	wg sync.WaitGroup

	removeObserver func()
	removeCommit   func()

	mu         sync.Mutex // protects the fields below and the state of every serverConn
	conns      map[*serverConn]struct{}
	perUID     map[int]int   // connections in conns by peer uid
	changed    chan struct{} // closed and replaced at every change of conns or of a state
	acceptDone bool          // the accept loop has ended: conns only shrinks
	// Once retiring, this generation serves no new request of its own:
	// waiting connections go to the successor (handOver) or are closed,
	// and the others get until graceEnd (see retire.go).
	retiring       bool
	handOver       bool
	graceEnd       time.Time
	upgradeStarted time.Time // when the running upgrade began; zero when none runs
}

// Listen opens the control socket at path through upg — inherited from the
// previous generation if it served the same path, new otherwise — and
// starts serving it. Call it before [molt.Upgrader.Ready], as with every
// inherited socket: Ready closes inherited sockets nobody claimed.
//
// The socket's directory must not let another user replace the file:
// Listen fails if it belongs to a user other than root and this process's,
// or if others (its group included) may write to it, unless it is sticky
// like /tmp. A new socket file gets [Options.Mode] and [Options.Group] as
// it is created: on Linux the socket is bound on a thread of its own whose
// umask and file-system group are those, so the file never exists with
// others (where the system refuses either, the file is created with no
// more permissions than Mode and completed through a descriptor of it).
// Elsewhere it is bound under the process's umask and changed right
// after, by calls that follow no symbolic link; in that moment only the
// peer-credential check, which applies to every connection, keeps others
// out. An inherited socket file is not changed by path: on Linux, if its
// mode or group differ from the options, they are changed through a
// descriptor shown to be the very file the chain created; elsewhere, and
// if that cannot be shown, it is left as it is and a warning is logged. A
// stale socket file of a crashed run is replaced; a path another live
// process serves is left alone and Listen fails.
//
// The server answers nothing before the Upgrader is ready: connections
// made earlier wait in the socket's queue. In a successor that is right:
// until it is ready its parent answers on the same socket.
//
// Listen fails with [ErrNotSupported] where peer credentials cannot be
// read, and with the Upgrader's errors (such as [molt.ErrStopped]). The
// caller must call [Server.Close] when done.
func Listen(upg *molt.Upgrader, path string, opts Options) (*Server, error) {
	if !peercred.Supported {
		return nil, fmt.Errorf("%w: cannot read a peer's credentials on %s, so the socket would be unauthenticated", ErrNotSupported, runtime.GOOS)
	}
	mode, gid, err := opts.socketFile()
	if err != nil {
		return nil, err
	}
	abs := path
	var dir *socketDir
	if !strings.HasPrefix(path, "@") {
		if abs, err = filepath.Abs(path); err != nil {
			return nil, fmt.Errorf("control: %w", err)
		}
		if dir, err = openSocketDir(filepath.Dir(abs)); err != nil {
			return nil, err
		}
		defer dir.close()
	}

	created := false // the Upgrader bound a new socket file, rather than inherit one
	lc := &net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		created = true
		presetMode(rc, mode)
		return nil
	}}
	var ln net.Listener
	listen := func() { ln, err = upg.ListenWith(context.Background(), lc, "unix", abs) }
	if dir != nil {
		withCreationAttrs(mode, gid, listen)
	} else {
		listen() // an abstract socket has no file
	}
	if err != nil {
		return nil, fmt.Errorf("control: listen on %s: %w", path, err)
	}
	ok := false
	defer func() {
		if !ok {
			ln.Close()
		}
	}()

	s := &Server{
		upg:     upg,
		ln:      ln,
		path:    abs,
		log:     opts.Logger,
		opts:    opts,
		uid:     os.Geteuid(),
		gid:     gid,
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		conns:   make(map[*serverConn]struct{}),
		perUID:  make(map[int]int),
		changed: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.hist = openHistory(upg, s.log)
	if dir != nil {
		if err := s.settleFile(dir, created, mode, gid); err != nil {
			return nil, err
		}
	} else if s.hist != nil {
		updateHistory(s.hist, func(h *historyRecord) { h.Control, h.ControlFile = abs, nil })
	}
	s.refusals = newRefusals(s.log, refusalInterval)
	s.base, s.cancel = context.WithCancel(context.Background())
	s.removeObserver = upg.Observe(s.observe)
	s.removeCommit = upg.OnCommit(s.committed)
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

// settleFile gives the socket file at s.path, in dir, its mode and group
// (see settle) and records its identity in the history, for successors.
// It fails only for a file this process has just created.
func (s *Server) settleFile(dir *socketDir, created bool, mode os.FileMode, gid int) error {
	var recorded fileID
	if s.hist != nil {
		historyMu.Lock()
		if h, ok := loadHistoryLocked(s.hist); ok && h.Control == s.path && h.ControlFile != nil {
			recorded = *h.ControlFile
		}
		historyMu.Unlock()
	}
	st, err := dir.settle(filepath.Base(s.path), created, recorded, mode, gid)
	switch {
	case err == nil:
		if st.changed && !created {
			s.log.Info("control: inherited socket file given the options' mode and group",
				"path", s.path, "mode", fmt.Sprintf("%#o", st.mode), "gid", st.gid)
		}
		if s.hist != nil {
			updateHistory(s.hist, func(h *historyRecord) { h.Control, h.ControlFile = s.path, &st.id })
		}
		return nil
	case created:
		return err
	case errors.Is(err, errNotVerified):
		s.log.Warn("control: inherited socket file keeps its mode and group: it cannot be shown to be the file this service created",
			"path", s.path, "mode", fmt.Sprintf("%#o", st.mode), "gid", st.gid,
			"want_mode", fmt.Sprintf("%#o", mode.Perm()), "want_gid", gid)
	default:
		s.log.Warn("control: inherited socket file left as it is", "path", s.path, "err", err)
	}
	return nil
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

// Close stops the server: it stops accepting, lets the requests being
// answered finish (an upgrade a request started is cancelled: its
// successor is killed and the reply says so; a reply already known, such
// as that of an upgrade that just succeeded, is still sent), and waits
// until every goroutine of the server has ended. Connections waiting for
// a request are handed to the successor if one took over, so that a
// request their clients send meanwhile is answered there; otherwise they
// are closed. In a successor that was upgraded in turn, Close also waits
// (up to a few seconds) until its parent is gone, which may still be
// handing it connections. Call Close before the Upgrader's Stop, which
// ends the hand-over.
//
// The control socket leaves the inventory, and its file is removed unless
// another generation serves it (a successor after an upgrade, or the
// parent of a successor that is not ready yet); after the Upgrader's Stop
// it is gone already. Close may be called more than once; later calls
// wait for the first and return nil.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		s.cancel()
		s.removeObserver() // not under s.mu: the observer takes it
		s.removeCommit()
		if cerr := s.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = fmt.Errorf("control: close %s: %w", s.path, cerr)
		}
		s.startRetire()
		s.wg.Wait()
		s.mu.Lock()
		handedOver := s.handOver
		s.mu.Unlock()
		if handedOver && s.upg.HasParent() {
			s.waitForParent()
		}
		s.refusals.close()
	})
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
	case molt.EventUpgraded:
		s.mu.Lock()
		s.upgradeStarted = time.Time{}
		s.mu.Unlock()
	case molt.EventUpgradeFailed:
		s.mu.Lock()
		s.upgradeStarted = time.Time{}
		s.mu.Unlock()
		s.record(resultOfEvent(e))
	}
}

// committed is the Upgrader's commit hook: the successor said READY and is
// about to be told it took over. The upgrade is recorded as a success now,
// before the successor's Ready returns: it reads this record. A successor
// that then fails to take the ACK is recorded again, as a failure.
func (s *Server) committed(_ context.Context, successorPID int) {
	s.mu.Lock()
	started := s.upgradeStarted
	s.mu.Unlock()
	s.record(UpgradeResult{
		OK:           true,
		PID:          os.Getpid(),
		Generation:   s.upg.Generation(),
		SuccessorPID: successorPID,
		Started:      started,
		Duration:     time.Since(started),
	})
}

// record writes the result of an upgrade into the chain's history.
func (s *Server) record(r UpgradeResult) {
	if s.hist == nil {
		return
	}
	updateHistory(s.hist, func(h *historyRecord) {
		if h.Last != nil && h.Last.PID == r.PID && h.Last.SuccessorPID == r.SuccessorPID && r.SuccessorPID != 0 {
			if h.Last.OK == r.OK {
				return // recorded already, by another Server of this Upgrader
			}
			if h.Last.OK && !r.OK { // committed, then the ACK failed
				h.Last = &r
				h.Failed++
			}
			return
		}
		if !r.OK {
			h.Failed++
		}
		h.Last = &r
	})
}

func (s *Server) markReady() { s.readyOnce.Do(func() { close(s.ready) }) }

// watch stops accepting when this generation's work is over: a successor
// serves the socket now (its copy keeps the queue open), or the Upgrader
// stopped. It ends then, or at Close.
func (s *Server) watch() {
	defer s.wg.Done()
	select {
	case <-s.upg.Exit():
		s.ln.Close()
		if s.upg.Reason() == molt.Upgraded {
			s.log.Info("control: a successor took over; no longer accepting on the control socket", "path", s.path)
			s.startRetire() // hand the waiting connections over now, not at Close
		}
	case <-s.done:
	}
}

// serve is the accept loop. It starts when the Upgrader is ready and ends
// when the listener is closed (by watch, Stop or Close).
func (s *Server) serve() {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		s.acceptDone = true
		s.signalLocked()
		s.mu.Unlock()
	}()
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
		// c stays molt's wrapper, which can hand it to a successor.
		s.admit(c)
	}
}

// serveConn answers sc's requests, one per line, until its client closes
// the connection, sends something unreadable, stays idle for idleTimeout,
// or asks to stop, or until it is handed to the successor or closed as
// this generation retires.
func (s *Server) serveConn(sc *serverConn) {
	defer s.wg.Done()
	defer s.untrack(sc)
	c, p := sc.c, sc.peer
	var lr lineReader
	fresh := true // waiting for a new request, not the rest of one
	for {
		line, ok := lr.next()
		if !ok {
			if lr.full() {
				s.log.Warn("control: request too large", append(p.attrs(), "limit", MaxRequestSize)...)
				s.writeReply(c, Reply{V: Version, Code: CodeTooLarge, Error: fmt.Sprintf("request longer than %d bytes", MaxRequestSize)})
				return
			}
			s.await(sc, fresh, lr.buffered() == 0)
			fresh = false
			err := lr.fill(c.Read)
			s.busy(sc)
			if err == nil {
				continue
			}
			if !errors.Is(err, io.EOF) || lr.buffered() == 0 {
				return // closed, reset, idle, or handed over
			}
			line = lr.rest() // the last request arrived without a newline
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		rep := s.handle(line, p)
		if !s.writeReply(c, rep) {
			return
		}
		if rep.Op == OpStop && rep.OK {
			c.Close() // the client has its answer; now stop
			s.stopOnce.Do(s.stopService)
			return
		}
		fresh = true
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
		s.upgrade(&rep, req.IfGeneration)
	case req.Op == OpCheck:
		s.check(&rep)
	}
	rep.OK = rep.Code == CodeOK
	logRequest(s.log, p, req.Op, &rep, start)
	return rep
}

// logRequest logs one answered request: status requests at debug level
// (monitoring polls them: not worth a line each), refusals and failures as
// warnings.
func logRequest(log *slog.Logger, p peer, op Op, rep *Reply, start time.Time) {
	level := slog.LevelInfo
	switch {
	case rep.Code != CodeOK:
		level = slog.LevelWarn
	case op == OpStatus:
		level = slog.LevelDebug
	}
	attrs := append(p.attrs(), "op", op, "code", string(rep.Code), "duration", time.Since(start))
	if rep.Upgrade != nil {
		attrs = append(attrs, "successor_pid", rep.Upgrade.SuccessorPID)
	}
	if rep.Error != "" {
		attrs = append(attrs, "err", rep.Error)
	}
	log.Log(context.Background(), level, "control: request", attrs...)
}

// upgrade runs an upgrade for a request (if generation ifGen serves, when
// it is not zero) and fills the reply with its result. The upgrade belongs to the server, not to the connection: a
// client that goes away does not cancel it.
func (s *Server) upgrade(rep *Reply, ifGen uint64) {
	ctx, cancel := s.upgradeContext()
	defer cancel()
	start := time.Now()
	var err error
	if ifGen != 0 {
		err = s.upg.UpgradeIfGeneration(ctx, ifGen)
	} else {
		err = s.upg.Upgrade(ctx)
	}
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
	case !errors.As(err, &ce) && notStarted(rep, err, ifGen):
		if rep.Code == CodeInProgress {
			rep.Error = s.inProgressMessage()
		}
	default:
		describeFailure(res, err)
		rep.Code, rep.Error, rep.Upgrade = CodeFailed, err.Error(), res
	}
}

// notStarted fills rep for an upgrade request that started nothing, and
// reports whether err was such a refusal: another upgrade runs, another
// generation serves than ifGen, too many drain, not ready, replaced or
// stopping. Any other error is a failed upgrade.
func notStarted(rep *Reply, err error, ifGen uint64) bool {
	switch {
	case errors.Is(err, molt.ErrUpgradeInProgress):
		rep.Code, rep.Error = CodeInProgress, err.Error()
	case errors.Is(err, molt.ErrGenerationChanged):
		rep.Code = CodeGenerationChanged
		rep.Error = fmt.Sprintf("generation %d serves, not generation %d; nothing was started", rep.Generation, ifGen)
	case errors.Is(err, molt.ErrTooManyDraining):
		rep.Code, rep.Error = CodeTooManyDraining, err.Error()
	case errors.Is(err, molt.ErrNotReady):
		rep.Code, rep.Error = CodeNotReady, "the service is not ready yet"
	case errors.Is(err, molt.ErrUpgraded):
		rep.Code = CodeReplaced
		rep.Error = fmt.Sprintf("pid %d (generation %d) was replaced by a successor; connect again", rep.PID, rep.Generation)
	case errors.Is(err, molt.ErrStopped):
		rep.Code, rep.Error = CodeStopping, "the service is stopping"
	default:
		return false
	}
	return true
}

// upgradeContext is the context of an upgrade or a check that a request
// started: the server's, bounded by UpgradeTimeout.
func (s *Server) upgradeContext() (context.Context, context.CancelFunc) {
	return boundedContext(s.base, s.opts.UpgradeTimeout)
}

// boundedContext is base bounded by timeout, if it is positive.
func boundedContext(base context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout > 0 {
		return context.WithTimeout(base, timeout)
	}
	return base, func() {}
}

// check runs the pre-flight check for a request and fills the reply with
// its result.
func (s *Server) check(rep *Reply) {
	ctx, cancel := s.upgradeContext()
	defer cancel()
	start := time.Now()
	err := s.upg.Check(ctx)
	res := &UpgradeResult{OK: err == nil, PID: rep.PID, Generation: rep.Generation, Started: start, Duration: time.Since(start)}
	rep.Code, rep.Check = CodeOK, res
	if err != nil {
		describeFailure(res, err)
		rep.Code, rep.Error = CodeCheckFailed, err.Error()
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
