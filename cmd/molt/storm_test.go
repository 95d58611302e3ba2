//go:build unix

package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/internal/proctest"
)

func init() { roles["lingering"] = roleLingering }

// roleLingering is a service with a control socket and MaxDraining 1
// whose generations, once upgraded, linger until the file named by
// envRelease exists.
func roleLingering() int {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	upg, err := molt.New(molt.Options{
		Logger:       log,
		ReadyTimeout: 2 * time.Minute,
		MaxDraining:  1,
		Command: func(cmd *exec.Cmd) error {
			cmd.Env = append(cmd.Env, envRole+"=lingering")
			return nil
		},
	})
	if err != nil {
		proctest.Say("error err=%q", err.Error())
		return 10
	}
	defer upg.Stop()
	ctl, err := control.Listen(upg, os.Getenv(envSock), control.Options{Logger: log})
	if err != nil {
		proctest.Say("error err=%q", err.Error())
		return 11
	}
	defer ctl.Close()
	if err := upg.Ready(); err != nil {
		proctest.Say("error err=%q", err.Error())
		return 12
	}
	proctest.Say("ready pid=%d gen=%d", os.Getpid(), upg.Generation())
	<-upg.Exit()
	if upg.Reason() == molt.Upgraded {
		proctest.Say("lingering pid=%d", os.Getpid())
		released := proctest.Until(proctest.Patience, func() bool {
			_, err := os.Stat(os.Getenv(envRelease))
			return err == nil
		})
		if !released {
			proctest.Say("error err=%q", "never released")
			return 13
		}
	}
	proctest.Say("exiting pid=%d reason=%s", os.Getpid(), upg.Reason())
	return 0
}

// TestCLITooManyDraining: while the old generation still drains, a
// service with MaxDraining 1 refuses the next upgrade; molt upgrade says
// so, names the draining PID and exits with its own status, --json
// carries too_many_draining, and the Client's error matches
// ErrTooManyDraining. Once the old generation has exited, the upgrade
// works.
func TestCLITooManyDraining(t *testing.T) {
	dir := proctest.ShortDir(t)
	sock := filepath.Join(dir, "c.sock")
	release := filepath.Join(dir, "release")
	svc := startService(t, sock, envRole+"=lingering", envRelease+"="+release)

	if r := moltCLI(t, "-s", sock, "upgrade"); r.code != exitOK {
		t.Fatalf("first molt upgrade: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	ready := svc.ev.Wait(t, "ready")
	if l := svc.ev.Wait(t, "lingering"); l["pid"] != strconv.Itoa(svc.pid) {
		t.Fatalf("lingering event %v, want generation 1 (pid %d)", l, svc.pid)
	}

	r := moltCLI(t, "-s", sock, "upgrade")
	want := "molt: upgrade not started: molt: too many older generations still draining: 1 still running (pid " + strconv.Itoa(svc.pid) + " (generation 1))"
	if r.code != exitTooManyDraining || !strings.HasPrefix(r.stderr, want) || r.stdout != "" {
		t.Errorf("molt upgrade while generation 1 drains: exit %d, stdout %q, stderr %q; want %d, %q...", r.code, r.stdout, r.stderr, exitTooManyDraining, want)
	}
	r = moltCLI(t, "-s", sock, "--json", "upgrade")
	rep := decodeReply(t, r)
	if r.code != exitTooManyDraining || rep.OK || rep.Code != control.CodeTooManyDraining || rep.Upgrade != nil ||
		!strings.Contains(rep.Error, "pid "+strconv.Itoa(svc.pid)) || strconv.Itoa(rep.PID) != ready["pid"] {
		t.Errorf("molt upgrade --json while generation 1 drains: exit %d, %s; want %d, too_many_draining from pid %s", r.code, r.stdout, exitTooManyDraining, ready["pid"])
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := (&control.Client{Path: sock}).Upgrade(ctx); !errors.Is(err, control.ErrTooManyDraining) {
		t.Errorf("Client.Upgrade while generation 1 drains = %v, want ErrTooManyDraining", err)
	}
	r = moltCLI(t, "-s", sock, "status", "--json")
	if st := decodeReply(t, r).Status; st == nil || st.Generation != 2 || st.Upgrades != 1 || st.FailedUpgrades != 0 ||
		len(st.Draining) != 1 || st.Draining[0] != svc.pid {
		t.Errorf("status after the refusals: %s; want generation 2, no failed upgrade, pid %d draining", r.stdout, svc.pid)
	}
	r = moltCLI(t, "-s", sock, "status")
	if want := "draining      pid " + strconv.Itoa(svc.pid) + "\n"; !strings.Contains(r.stdout, want) {
		t.Errorf("molt status lacks %q:\n%s", want, r.stdout)
	}

	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if e := svc.ev.Wait(t, "exiting"); e["pid"] != strconv.Itoa(svc.pid) {
		t.Fatalf("exiting event %v, want generation 1", e)
	}
	<-svc.exited
	if r := moltCLI(t, "-s", sock, "upgrade"); r.code != exitOK {
		t.Errorf("molt upgrade after generation 1 exited: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	svc.ev.Wait(t, "ready")
	moltCLI(t, "-s", sock, "stop")
}
