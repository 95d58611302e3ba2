//go:build linux

package control_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/internal/proctest"
)

// swapUpgrades is how many upgrades each case of TestSocketFileSwap races.
const swapUpgrades = 100

// TestSocketFileSwap runs an attacker as another user who swaps the
// control socket's name with a symbolic link to a file of root's, over and
// over, while root upgrades the service 100 times. A server that checks
// the name and then changes the file by name (chmod follows links) changes
// the target's mode; the target's mode and owner must never change.
//
// The attacker needs write access to the socket's directory: Listen must
// refuse such a directory at the start, and a successor must refuse it
// when it became writable later (each upgrade then fails, and the old
// generation serves on). In a sticky directory like /tmp, which Listen
// accepts, nobody but the file's owner may rename it: every swap fails.
func TestSocketFileSwap(t *testing.T) {
	requireRoot(t)
	base := proctest.ShortDir(t)
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(base, "target")
	if err := os.WriteFile(target, []byte("root's secret\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(target, 0o640); err != nil { // whatever the umask
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		start, later uint32 // the directory's mode at Listen and after (0: unchanged)
		refused      bool   // Listen refuses the directory
		upgrade      bool   // the upgrades succeed
	}{
		{name: "writable by others", start: 0o777, refused: true},
		{name: "made writable by others", start: 0o755, later: 0o777},
		{name: "sticky", start: 0o1777, upgrade: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(base, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Chmod(dir, tc.start); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(dir, "c.sock")
			u, ev := upgraderWithSuccessors(t, "service", sock)
			s, err := control.Listen(u, sock, control.Options{})
			switch {
			case tc.refused && err == nil:
				t.Errorf("Listen in a directory of mode %#o succeeded; want it refused", tc.start)
			case tc.refused:
				if !strings.Contains(err.Error(), "socket directory "+dir+" is writable by its group and other users") {
					t.Errorf("Listen's refusal = %q; want it to name the directory and who may write to it", err)
				}
				if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("after the refusal, the socket path: %v; want nothing created", err)
				}
				return
			case err != nil:
				t.Fatalf("Listen: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			if err := u.Ready(); err != nil {
				t.Fatal(err)
			}
			// This generation closes its server after the upgrade, as a
			// service does; the successors do the same in their role.
			go func() { <-u.Exit(); s.Close() }()

			// Root's own way in, which the attacker cannot swap: a hard
			// link to the socket file in a private directory.
			private := filepath.Join(proctest.ShortDir(t), "c.sock")
			if err := os.Link(sock, private); err != nil {
				t.Fatal(err)
			}
			if tc.later != 0 {
				if err := syscall.Chmod(dir, tc.later); err != nil {
					t.Fatal(err)
				}
			}
			before := fileOwnership(t, target)
			attacker := startAsUser(t, 4242, 4242, "swapper", envSock+"="+sock, envTarget+"="+target)
			attacker.ev.Wait(t, "swapping")

			c, ctx := client(t, private)
			succeeded, otherReasons, firstReason := 0, 0, ""
			for i := 1; i <= swapUpgrades; i++ {
				_, err := c.Upgrade(ctx)
				if now := fileOwnership(t, target); now != before {
					t.Fatalf("after upgrade %d (%v), the link's target is %s; it was %s", i, err, now, before)
				}
				switch {
				case tc.upgrade && err != nil:
					t.Fatalf("upgrade %d: %v", i, err)
				case !tc.upgrade && err == nil:
					succeeded++
				case !tc.upgrade:
					if !errors.Is(err, control.ErrUpgradeFailed) {
						t.Fatalf("upgrade %d = %v; want ErrUpgradeFailed", i, err)
					}
					if e := ev.Wait(t, "error"); !strings.Contains(e["err"], dir+" is writable by its group and other users") {
						if otherReasons++; otherReasons == 1 {
							firstReason = fmt.Sprintf("upgrade %d: %s", i, e["err"])
						}
					}
				}
			}
			if otherReasons > 0 {
				t.Errorf("%d successors failed for another reason than the directory; the first, %s", otherReasons, firstReason)
			}
			if succeeded > 0 {
				t.Errorf("%d of %d upgrades succeeded in a directory others can write to; want the successors to refuse it", succeeded, swapUpgrades)
			}
			swapped := attacker.stop(t, "swapped")
			t.Logf("%d upgrades; the attacker swapped %s times, was refused %s times (%s)",
				swapUpgrades, swapped["swaps"], swapped["refused"], swapped["err"])
			if tc.upgrade && swapped["swaps"] != "0" {
				t.Errorf("the attacker swapped the socket %s times in a sticky directory; want none", swapped["swaps"])
			}
			if !tc.upgrade && swapped["swaps"] == "0" {
				t.Errorf("the attacker never swapped the socket: the test raced nothing (%s)", swapped["err"])
			}
			if st, err := (&control.Client{Path: sock}).Status(ctx); err != nil || st.Generation != uint64(1+succeeded+btoi(tc.upgrade)*swapUpgrades) {
				t.Errorf("status through the socket's own name: %+v, %v; want it served", st, err)
			}
			if now := fileOwnership(t, target); now != before {
				t.Errorf("at the end, the link's target is %s; it was %s", now, before)
			}
		})
	}
}

// fileOwnership describes path's mode and owner, without following a link.
func fileOwnership(t *testing.T, path string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("mode %#o uid %d gid %d", st.Mode, st.Uid, st.Gid)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
