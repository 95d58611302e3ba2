package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moltgo/molt/internal/peercred"
)

// Service is what a control socket can drive besides a [*molt.Upgrader]:
// a process that upgrades something other than itself, such as the
// supervisor of "molt run" (package supervise), which replaces programs
// that do not use molt. [ListenService] serves it with the same protocol,
// authentication and replies as [Listen], so the molt command and
// [Client] work unchanged.
type Service interface {
	// Upgrade runs an upgrade (only if generation ifGeneration serves,
	// when it is not zero) and returns its result. An error matching
	// molt.ErrUpgradeInProgress, molt.ErrGenerationChanged,
	// molt.ErrNotReady or molt.ErrStopped is answered with its code
	// (CodeInProgress, ...); any other error with CodeFailed and the
	// result, whose Reason, Stage and ExitStatus say why.
	Upgrade(ctx context.Context, ifGeneration uint64) (*UpgradeResult, error)
	// Status describes the service now.
	Status() Status
	// Stop starts a graceful stop; it is called after the stop request
	// was answered and must not wait for the stop to end.
	Stop()
}

// ServiceServer serves the control protocol for a [Service] on a Unix
// socket of its own. Create it with [ListenService]; release it with
// [ServiceServer.Close].
type ServiceServer struct {
	svc  Service
	ln   *net.UnixListener
	path string
	log  *slog.Logger
	opts Options
	uid  int
	gid  int

	refusals *refusals

	base   context.Context // cancelled by Close: ends a running upgrade
	cancel context.CancelFunc

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	perUID   map[int]int
	closed   bool
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// ListenService creates the control socket at path (a file system path;
// a stale socket file of a crashed run is replaced, one that a live
// process serves is left alone and ListenService fails) and serves svc on
// it. The socket's directory, the file's mode and group, and every
// connection's peer credentials are checked as for [Listen];
// [Options.OnStop], if set, replaces svc.Stop. The socket file is removed
// by [ServiceServer.Close].
func ListenService(svc Service, path string, opts Options) (*ServiceServer, error) {
	if !peercred.Supported {
		return nil, fmt.Errorf("%w: cannot read a peer's credentials, so the socket would be unauthenticated", ErrNotSupported)
	}
	mode, gid, err := opts.socketFile()
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(path, "@") {
		return nil, fmt.Errorf("control: ListenService: %s: abstract sockets are not supported here, use a path", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	dir, err := openSocketDir(filepath.Dir(abs))
	if err != nil {
		return nil, err
	}
	defer dir.close()
	if err := removeStaleSocket(abs); err != nil {
		return nil, err
	}
	lc := &net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		presetMode(rc, mode)
		return nil
	}}
	var ln net.Listener
	withCreationAttrs(mode, gid, func() { ln, err = lc.Listen(context.Background(), "unix", abs) })
	if err != nil {
		return nil, fmt.Errorf("control: listen on %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(true)
	if _, err := dir.settle(filepath.Base(abs), true, fileID{}, mode, gid); err != nil {
		ul.Close()
		return nil, err
	}
	s := &ServiceServer{
		svc: svc, ln: ul, path: abs, log: opts.Logger, opts: opts,
		uid: os.Geteuid(), gid: gid,
		conns:  make(map[net.Conn]struct{}),
		perUID: make(map[int]int),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.refusals = newRefusals(s.log, refusalInterval)
	s.base, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.serve()
	s.log.Info("control: listening", "path", abs, "mode", fmt.Sprintf("%#o", mode), "pid", os.Getpid())
	return s, nil
}

// removeStaleSocket removes a socket file at path that nothing serves.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("control: %s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("control: %s is served by another process", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control: %s: cannot tell whether another process serves it: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("control: remove stale socket: %w", err)
	}
	return nil
}

// Path returns the socket's absolute path.
func (s *ServiceServer) Path() string { return s.path }

// Close stops accepting, removes the socket file, cancels a running
// upgrade a request started (its reply is still sent), closes the
// connections waiting for a request and waits for every goroutine of the
// server. Later calls return nil.
func (s *ServiceServer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	err := s.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	s.cancel()
	s.mu.Lock()
	for c := range s.conns {
		c.SetReadDeadline(time.Now()) // ends a wait for a request; a reply being made is still written
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.refusals.close()
	if err != nil {
		return fmt.Errorf("control: close %s: %w", s.path, err)
	}
	return nil
}

func (s *ServiceServer) serve() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("control: accept failed; retrying", "err", err, "delay", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.base.Done():
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		s.admit(c)
	}
}

// admit checks c's peer and books its slot (see conns.go), or refuses it.
func (s *ServiceServer) admit(c net.Conn) {
	p, err := peerOf(c)
	if err == nil {
		err = authorizePeer(p, s.uid, s.gid)
	}
	if err != nil {
		s.refuse(c, p, CodePermissionDenied, "permission denied: "+err.Error())
		return
	}
	s.mu.Lock()
	if s.closed || s.perUID[p.uid] >= maxConnsPerUID {
		closed := s.closed
		s.mu.Unlock()
		if closed {
			c.Close()
			return
		}
		s.refuse(c, p, CodeBusy, fmt.Sprintf("too many connections from uid %d (%d at once); try again", p.uid, maxConnsPerUID))
		return
	}
	s.perUID[p.uid]++
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go s.serveConn(c, p)
}

func (s *ServiceServer) refuse(c net.Conn, p peer, code Code, msg string) {
	s.refusals.note(p, code, msg)
	c.SetWriteDeadline(time.Now().Add(refuseTimeout))
	c.Write(encodeLine(Reply{V: Version, Code: code, Error: msg}))
	c.Close()
}

func (s *ServiceServer) serveConn(c net.Conn, p peer) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		if s.perUID[p.uid]--; s.perUID[p.uid] == 0 {
			delete(s.perUID, p.uid)
		}
		s.mu.Unlock()
		c.Close()
	}()
	var lr lineReader
	for {
		line, ok := lr.next()
		if !ok {
			if lr.full() {
				s.writeReply(c, Reply{V: Version, Code: CodeTooLarge, Error: fmt.Sprintf("request longer than %d bytes", MaxRequestSize)})
				return
			}
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				return
			}
			c.SetReadDeadline(time.Now().Add(idleTimeout))
			s.mu.Unlock()
			err := lr.fill(c.Read)
			if err == nil {
				continue
			}
			if !errors.Is(err, io.EOF) || lr.buffered() == 0 {
				return
			}
			line = lr.rest()
		}
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		rep := s.handle(line, p)
		if !s.writeReply(c, rep) {
			return
		}
		if rep.Op == OpStop && rep.OK {
			c.Close()
			s.stopOnce.Do(func() {
				if s.opts.OnStop != nil {
					s.opts.OnStop()
					return
				}
				s.svc.Stop()
			})
			return
		}
	}
}

func (s *ServiceServer) writeReply(c net.Conn, rep Reply) bool {
	rep.OK = rep.Code == CodeOK
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := c.Write(encodeLine(rep))
	return err == nil
}

// handle answers one request line.
func (s *ServiceServer) handle(line []byte, p peer) Reply {
	start := time.Now()
	req, err := decodeRequest(line)
	st := s.svc.Status()
	rep := Reply{V: Version, Op: req.Op, PID: st.PID, Generation: st.Generation}
	var er *errRequest
	switch {
	case errors.As(err, &er):
		rep.Code, rep.Error = er.code, er.msg
		s.log.Warn("control: bad request", append(p.attrs(), "code", string(er.code), "err", er.msg)...)
		return rep
	case req.Op == OpStatus:
		rep.Code, rep.Status = CodeOK, &st
	case req.Op == OpStop:
		rep.Code = CodeOK
	case req.Op == OpCheck:
		rep.Code, rep.Error = CodeCheckFailed, "this service has no pre-flight check"
		rep.Check = &UpgradeResult{PID: st.PID, Generation: st.Generation, Started: start, Reason: rep.Error}
	case req.Op == OpUpgrade:
		s.upgrade(&rep, req.IfGeneration)
	}
	rep.OK = rep.Code == CodeOK
	logRequest(s.log, p, req.Op, &rep, start)
	return rep
}

func (s *ServiceServer) upgrade(rep *Reply, ifGen uint64) {
	ctx, cancel := boundedContext(s.base, s.opts.UpgradeTimeout)
	defer cancel()
	res, err := s.svc.Upgrade(ctx, ifGen)
	switch {
	case err == nil:
		rep.Code, rep.Upgrade = CodeOK, res
	case notStarted(rep, err, ifGen):
	default:
		if res == nil {
			res = &UpgradeResult{PID: rep.PID, Generation: rep.Generation, Reason: err.Error()}
		}
		res.OK = false
		if res.Error == "" {
			res.Error = err.Error()
		}
		rep.Code, rep.Error, rep.Upgrade = CodeFailed, err.Error(), res
	}
}
