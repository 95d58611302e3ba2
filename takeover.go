package molt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"github.com/moltgo/molt/internal/handoff"
	"github.com/moltgo/molt/internal/peercred"
)

// Takeovers: a successor that someone else started (another systemd unit,
// a container sharing the network namespace, an operator) connects to the
// serving generation's takeover socket and says TAKEOVER; from the HELLO
// on, the conversation is a forked successor's, and so are the rules: one
// upgrade at a time, the grace period, the ACK, the probation, the drain.
// What differs: the serving generation did not start the taker, so it
// authenticates it by its peer credentials (the service's user, root, or
// Options.TakeoverGroup), cannot reap it, and kills only that one process
// when its takeover fails, never its group.

const (
	// envTakeoverFrom names the serving generation's takeover socket: a
	// process started with it takes over from that generation at New
	// (Options.TakeoverFrom).
	envTakeoverFrom = "MOLT_TAKEOVER_FROM"
	// envTakeoverReport names a descriptor on which New and Ready write
	// one line with the takeover's outcome, for `molt takeover`.
	envTakeoverReport = "MOLT_TAKEOVER_REPORT"
	// takeoverName is the takeover socket's inventory name: it follows
	// the generations like any listener.
	takeoverName = "molt/takeover"
	// takeoverHelloTimeout bounds how long a connection to the takeover
	// socket may take to say TAKEOVER.
	takeoverHelloTimeout = 5 * time.Second
)

// takerConn is a taker that said TAKEOVER and was allowed to.
type takerConn struct {
	conn *handoff.Conn
	cred peercred.Cred
}

// refuse tells the taker why nothing will be handed to it, and closes
// the connection.
func (tk *takerConn) refuse(err error) {
	tk.conn.SetWriteDeadline(time.Now().Add(time.Second))
	tk.conn.SendFailed(err.Error())
	tk.conn.Close()
}

// start begins the hand-off to the taker: HELLO, as startSuccessor writes
// it for a process it starts.
func (tk *takerConn) start(hello handoff.Hello) (*process, error) {
	tk.conn.SetWriteDeadline(time.Now().Add(time.Second))
	if err := tk.conn.SendHello(hello); err != nil {
		tk.conn.Close()
		return nil, fmt.Errorf("molt: takeover: %w", err)
	}
	tk.conn.SetWriteDeadline(time.Time{})
	return &process{
		conn:   tk.conn,
		taker:  newTakerHandle(tk.cred.PID),
		reapOK: make(chan struct{}),
		reaped: make(chan struct{}),
	}, nil
}

// failTaker ends a failed takeover: the taker is told why (so that its
// Ready fails instead of serving alone), gets up to grace to exit, and is
// killed if it has not, since it holds this generation's sockets.
func (s *process) failTaker(stage Stage, cause error, grace time.Duration) error {
	s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	s.conn.SendFailed(cause.Error())
	s.conn.Close()
	if !s.taker.waitGone(grace) {
		s.taker.kill()
	}
	s.release()
	return &ChildError{PID: s.pid(), Stage: stage, Err: cause}
}

// listenTakeover gives this generation its takeover socket at Ready: the
// one inherited under takeoverName if it still has the configured path,
// or a new one (a stale socket file that nothing serves is replaced).
func (u *Upgrader) listenTakeover() (net.Listener, error) {
	path := u.opts.TakeoverSocket
	if ln, err := u.Listener(takeoverName); err == nil {
		if ln.Addr().String() == path {
			return ln, nil
		}
		ln.Close() // the configuration names another path now
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("molt: Options.TakeoverSocket %s: another process serves it", path)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("molt: Options.TakeoverSocket: %w", err)
	}
	mode := os.FileMode(0o600)
	if u.opts.TakeoverGroup != "" {
		mode = 0o660
		if gid, err := lookupGID(u.opts.TakeoverGroup); err == nil {
			os.Chown(path, -1, gid)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("molt: Options.TakeoverSocket: %w", err)
	}
	return addNamed(u.inv, handoff.KindListener, takeoverName, ln, ln.Addr, true)
}

// serveTakeovers accepts on the takeover socket until this generation
// stops serving (Exit) or stops. Each connection gets its own goroutine,
// so that a second taker hears at once that an upgrade is in progress.
func (u *Upgrader) serveTakeovers(ln net.Listener) {
	defer u.wg.Done()
	go func() { // ends with this generation's service
		<-u.Exit()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				u.log.Warn("molt: takeover socket: accept failed; no more takeovers", "err", err)
			}
			return
		}
		u.wg.Add(1)
		go u.takeoverFrom(c)
	}
}

// takeoverFrom serves one connection to the takeover socket.
func (u *Upgrader) takeoverFrom(c net.Conn) {
	defer u.wg.Done()
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn() // molt's wrapper of an accepted connection
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return
	}
	cred, err := peercred.OfConn(uc)
	hc := handoff.NewConn(uc)
	hc.SetReadDeadline(time.Now().Add(takeoverHelloTimeout))
	waited := make(chan struct{})
	go func() { // Stop does not wait for a silent connection; ends with the read
		select {
		case <-u.lc.stop:
			hc.SetReadDeadline(time.Unix(1, 0))
		case <-waited:
		}
	}()
	m, rerr := hc.RecvMessage()
	close(waited)
	hc.SetReadDeadline(time.Time{})
	switch {
	case rerr != nil || m.Type != handoff.TypeTakeover:
		u.log.Warn("molt: takeover socket: not a takeover request", "peer_pid", cred.PID, "err", errorOrEOF(rerr), "message_type", m.Type.String())
		hc.Close()
		return
	case err != nil:
		err = fmt.Errorf("molt: takeover refused: %w", err)
	default:
		err = u.authorizeTaker(cred)
	}
	tk := &takerConn{conn: hc, cred: cred}
	if err != nil {
		u.log.Warn("molt: takeover refused", "peer_pid", cred.PID, "peer_uid", cred.UID, "err", err)
		tk.refuse(err)
		return
	}
	u.log.Info("molt: takeover requested", "taker_pid", cred.PID, "uid", cred.UID)
	u.upgrade(context.Background(), tk) // bounded by ReadyTimeout; logs and records its outcome
}

// authorizeTaker allows this process's user, root, and members of
// Options.TakeoverGroup (by effective group).
func (u *Upgrader) authorizeTaker(p peercred.Cred) error {
	if p.UID == os.Geteuid() || p.UID == 0 {
		return nil
	}
	if g := u.opts.TakeoverGroup; g != "" {
		gid, err := lookupGID(g)
		if err == nil && p.GID == gid {
			return nil
		}
		return fmt.Errorf("molt: takeover refused: peer uid %d gid %d is not allowed (only uid %d, root and group %s)", p.UID, p.GID, os.Geteuid(), g)
	}
	return fmt.Errorf("molt: takeover refused: peer uid %d is not allowed (only uid %d and root)", p.UID, os.Geteuid())
}

// lookupGID resolves a group name or numeric ID.
func lookupGID(name string) (int, error) {
	if id, err := strconv.Atoi(name); err == nil && id >= 0 {
		return id, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(g.Gid)
}

// connectTakeover is New's side of a takeover: it connects to the serving
// generation's takeover socket at path, checks that the generation there
// runs as this process's user or root, says TAKEOVER and reads the HELLO.
// A refusal is an error that gives the serving generation's reason.
func connectTakeover(path string, timeout time.Duration) (*parentLink, handoff.Hello, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, handoff.Hello{}, fmt.Errorf("molt: takeover from %s: %w", path, err)
	}
	uc := c.(*net.UnixConn)
	if cred, err := peercred.OfConn(uc); err == nil && cred.UID != os.Geteuid() && cred.UID != 0 {
		uc.Close()
		return nil, handoff.Hello{}, fmt.Errorf("molt: takeover from %s: the socket's owner is uid %d, not this process's uid %d or root", path, cred.UID, os.Geteuid())
	}
	hc := handoff.NewConn(uc)
	hc.SetDeadline(time.Now().Add(timeout)) // the whole hand-off; cleared once the inventory is in
	err = hc.SendTakeover()
	var hello handoff.Hello
	if err == nil {
		hello, err = hc.RecvHello()
	}
	if err == nil && hello.Generation < 2 {
		err = fmt.Errorf("the serving generation announced generation %d (want 2 or more)", hello.Generation)
	}
	if err != nil {
		if re := (*handoff.RefusedError)(nil); !errors.As(err, &re) {
			hc.SetWriteDeadline(time.Now().Add(time.Second))
			hc.SendFailed(err.Error())
		}
		hc.Close()
		return nil, handoff.Hello{}, fmt.Errorf("molt: takeover from %s: %w", path, err)
	}
	return newParentLink(hc, hello, true), hello, nil
}

// nobodyServes reports whether a takeover failed only because no
// generation serves the socket: no such file, or nobody accepting.
func nobodyServes(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}

// takeoverReport writes the takeover's outcome for `molt takeover` to the
// descriptor named by envTakeoverReport, once, and closes it.
type takeoverReport struct {
	w io.WriteCloser
}

func openTakeoverReport() *takeoverReport {
	v, ok := os.LookupEnv(envTakeoverReport)
	os.Unsetenv(envTakeoverReport)
	fd, err := strconv.Atoi(v)
	if !ok || err != nil || fd < 3 {
		return nil
	}
	setCloseOnExec(fd)
	return &takeoverReport{w: os.NewFile(uintptr(fd), "molt:takeover-report")}
}

// send writes "ready PID GENERATION" or "failed REASON".
func (r *takeoverReport) send(err error, generation uint64) {
	if r == nil || r.w == nil {
		return
	}
	if err != nil {
		fmt.Fprintf(r.w, "failed %s\n", err)
	} else {
		fmt.Fprintf(r.w, "ready %d %d\n", os.Getpid(), generation)
	}
	r.w.Close()
	r.w = nil
}
