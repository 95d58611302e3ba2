//go:build linux

package control_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/internal/proctest"
)

// fakeService answers as told.
type fakeService struct {
	upgradeErr error
	result     *control.UpgradeResult
	stops      atomic.Int32
	stopped    chan struct{}
}

func (f *fakeService) Upgrade(context.Context, uint64) (*control.UpgradeResult, error) {
	return f.result, f.upgradeErr
}
func (f *fakeService) Status() control.Status {
	return control.Status{PID: 42, Generation: 3, State: "ready", Listeners: []control.Listener{}}
}
func (f *fakeService) Stop() {
	if f.stops.Add(1) == 1 {
		close(f.stopped)
	}
}

// TestListenService: a Service is served with the protocol's codes, and
// the socket file is replaced when stale and removed at Close.
func TestListenService(t *testing.T) {
	dir := proctest.ShortDir(t)
	path := filepath.Join(dir, "c.sock")
	// A stale socket file of a crashed run: bound, then closed without
	// removing it.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()

	svc := &fakeService{stopped: make(chan struct{})}
	srv, err := control.ListenService(svc, path, control.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket file: %v, %v; want mode 0600", fi, err)
	}
	if _, err := control.ListenService(svc, path, control.Options{}); err == nil {
		t.Error("a second ListenService on a served path succeeded")
	}
	c := &control.Client{Path: path}
	ctx := context.Background()

	st, err := c.Status(ctx)
	if err != nil || st.PID != 42 || st.Generation != 3 {
		t.Errorf("Status = %+v, %v", st, err)
	}
	svc.result = &control.UpgradeResult{OK: true, PID: 42, Generation: 3, SuccessorPID: 43}
	if r, err := c.Upgrade(ctx); err != nil || r.SuccessorPID != 43 {
		t.Errorf("Upgrade = %+v, %v", r, err)
	}
	for _, tc := range []struct {
		err  error
		want error
	}{
		{fmt.Errorf("%w (started 1s ago)", molt.ErrUpgradeInProgress), control.ErrInProgress},
		{molt.ErrGenerationChanged, control.ErrGenerationChanged},
		{molt.ErrStopped, control.ErrUnavailable},
		{errors.New("the new instance exited"), control.ErrUpgradeFailed},
	} {
		svc.upgradeErr, svc.result = tc.err, nil
		if _, err := c.Upgrade(ctx); !errors.Is(err, tc.want) {
			t.Errorf("Upgrade with the service's %v = %v, want %v", tc.err, err, tc.want)
		}
	}
	var ce *control.Error
	svc.upgradeErr = errors.New("exited")
	svc.result = &control.UpgradeResult{PID: 42, Generation: 3, SuccessorPID: 44, Stage: "init", Reason: "exit status 3"}
	if _, err := c.Upgrade(ctx); !errors.As(err, &ce) || ce.Upgrade == nil || ce.Upgrade.Reason != "exit status 3" || ce.Upgrade.SuccessorPID != 44 {
		t.Errorf("failed Upgrade = %v, want the result", err)
	}
	if _, err := c.Check(ctx); !errors.Is(err, control.ErrCheckFailed) {
		t.Errorf("Check = %v, want ErrCheckFailed", err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Errorf("Stop = %v", err)
	}
	<-svc.stopped
	if err := srv.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}
