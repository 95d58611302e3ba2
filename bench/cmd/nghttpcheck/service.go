package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/moltgo/molt/bench/internal/eventlog"
	"github.com/moltgo/molt/internal/reap"
)

const (
	// firstReadyWait bounds the start of generation 1, upgradeWait one
	// upgrade (SIGHUP → the successor's ready event), exitWait an old
	// generation's drain and exit, stopWait the stop at the end; killGrace
	// is how long killed processes get to be reaped.
	firstReadyWait = 20 * time.Second
	upgradeWait    = serverReadyTimeout + 10*time.Second
	exitWait       = serverDrainTimeout + 5*time.Second
	stopWait       = serverDrainTimeout + 5*time.Second
	killGrace      = 5 * time.Second
)

// service is the molt service under test: generation 1, started by the
// driver, and its successors, all printing on one pipe.
type service struct {
	// takeover, if set, is the takeover socket: an upgrade starts a new
	// process that takes over through it, instead of a SIGHUP.
	takeover string
	cmdFor   func() *exec.Cmd // a new server process, for takeovers
	out      *os.File         // the servers' standard output, kept open for the takers
	reaper   *reap.Reaper
	events   *eventlog.Log[serverEvent]
	first    int         // generation 1's PID
	cur      serverEvent // the ready event of the generation serving now
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key
// into dir, for every generation to load: one certificate for the whole
// chain, as a real service's would be. nghttp does not verify it.
func writeCert(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "nghttpcheck"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, certFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, keyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}

// startService starts generation 1 and waits until it is ready.
func startService(ctx context.Context, r *reap.Reaper, certDir, takeover string) (*service, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmdFor := func() *exec.Cmd {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), envRole+"=server", envCertDir+"="+certDir, envTakeover+"="+takeover)
		cmd.Stdout, cmd.Stderr = pw, os.Stderr
		return cmd
	}
	cmd := cmdFor()
	err = r.Start(cmd)
	if takeover == "" || err != nil {
		pw.Close() // the servers hold the write end: end-of-file once all are gone
		pw = nil
	}
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("start the server: %w", err)
	}
	s := &service{reaper: r, events: eventlog.New(eventName), first: cmd.Process.Pid, takeover: takeover, cmdFor: cmdFor, out: pw}
	go s.events.Read(pr)
	wctx, cancel := context.WithTimeout(ctx, firstReadyWait)
	defer cancel()
	e, _, err := s.events.Wait(wctx, 0, func(e serverEvent) bool {
		return (e.Event == "ready" && e.Gen == 1) || e.Event == "error"
	})
	if err == nil && e.Event == "error" {
		err = errors.New(e.Err)
	}
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("generation 1 (pid %d) did not become ready: %w", s.first, err)
	}
	s.cur = e
	return s, nil
}

// upgrade sends SIGHUP to the serving generation and waits for its
// successor's ready event. It returns the old generation's ready event and
// the position in the log to look for its exit from.
func (s *service) upgrade(ctx context.Context) (old serverEvent, pos int, err error) {
	old = s.cur
	pos = s.events.Len()
	if s.takeover != "" {
		if err := s.reaper.Start(s.cmdFor()); err != nil {
			return old, pos, fmt.Errorf("start a taker of generation %d (pid %d): %w", old.Gen, old.PID, err)
		}
	} else if err := s.reaper.Signal(old.PID, syscall.SIGHUP); err != nil {
		return old, pos, fmt.Errorf("SIGHUP to generation %d (pid %d): %w", old.Gen, old.PID, err)
	}
	wctx, cancel := context.WithTimeout(ctx, upgradeWait)
	defer cancel()
	e, _, err := s.events.Wait(wctx, pos, func(e serverEvent) bool {
		return (e.Event == "ready" && e.Gen == old.Gen+1) ||
			(e.Event == "upgrade" && e.PID == old.PID && !e.OK) || e.Event == "error"
	})
	switch {
	case err != nil:
		return old, pos, fmt.Errorf("generation %d (pid %d): no successor within %v: %w", old.Gen, old.PID, upgradeWait, err)
	case e.Event == "error":
		return old, pos, fmt.Errorf("server pid %d: %s", e.PID, e.Err)
	case e.Event == "upgrade":
		return old, pos, fmt.Errorf("generation %d (pid %d): upgrade failed: %s", old.Gen, old.PID, e.Err)
	}
	s.cur = e
	return old, pos, nil
}

// waitExit waits until the old generation has reported a clean exit and
// is gone, and says what was wrong if it was not.
func (s *service) waitExit(ctx context.Context, old serverEvent, pos int) error {
	wctx, cancel := context.WithTimeout(ctx, exitWait)
	defer cancel()
	x, _, err := s.events.Wait(wctx, pos, func(e serverEvent) bool { return e.Event == "exit" && e.PID == old.PID })
	if err != nil {
		return fmt.Errorf("generation %d (pid %d) did not report its exit within %v: %w", old.Gen, old.PID, exitWait, err)
	}
	if x.Err != "" {
		return fmt.Errorf("generation %d (pid %d): drain: %s", old.Gen, old.PID, x.Err)
	}
	if !reap.SeesEveryProcess {
		if !waitGone(wctx, old.PID) {
			return fmt.Errorf("generation %d (pid %d) still exists after its exit event", old.Gen, old.PID)
		}
		return nil
	}
	status, err := s.reaper.WaitPID(wctx, old.PID)
	switch {
	case err != nil:
		return fmt.Errorf("generation %d (pid %d) was not reaped within %v: %w", old.Gen, old.PID, exitWait, err)
	case status != "exit status 0":
		return fmt.Errorf("generation %d (pid %d): %s", old.Gen, old.PID, status)
	}
	return nil
}

// stop sends SIGTERM to the serving generation, waits for every process
// to be gone, kills what is left, and returns every problem: a process
// left behind, a generation that did not report a clean exit.
func (s *service) stop() []string {
	if s.out != nil {
		s.out.Close() // the events end once the servers are gone
	}
	var problems []string
	pid := s.first
	if s.cur.PID != 0 {
		pid = s.cur.PID
	}
	if err := s.reaper.Signal(pid, syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		problems = append(problems, fmt.Sprintf("SIGTERM to pid %d: %v", pid, err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopWait)
	defer cancel()
	if !s.reaper.WaitAllGone(ctx) {
		for _, p := range s.reaper.KillLeft(killGrace) {
			problems = append(problems, "left behind and killed: "+p.String())
		}
	}
	// Every generation holds the pipe: its end is the sign that the last
	// one has exited where the reaper cannot see them all.
	select {
	case <-s.events.Done():
	case <-ctx.Done():
		select {
		case <-s.events.Done():
		case <-time.After(killGrace):
			problems = append(problems, "the servers' output did not end: some process still holds it")
		}
	}
	exits := map[int]serverEvent{}
	for _, e := range s.events.All("exit") {
		exits[e.PID] = e
	}
	for _, e := range s.events.All("error") {
		problems = append(problems, fmt.Sprintf("server pid %d: %s", e.PID, e.Err))
	}
	for _, r := range s.events.All("ready") {
		switch x, ok := exits[r.PID]; {
		case !ok:
			problems = append(problems, fmt.Sprintf("generation %d (pid %d) did not report its exit", r.Gen, r.PID))
		case x.Err != "":
			problems = append(problems, fmt.Sprintf("generation %d (pid %d): drain: %s", r.Gen, r.PID, x.Err))
		}
	}
	return problems
}

// waitGone polls until pid no longer exists, where the reaper cannot wait
// for it, and reports whether that happened before ctx ended.
func waitGone(ctx context.Context, pid int) bool {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !processGone(pid) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return processGone(pid)
		}
	}
	return true
}
