package control

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestPresetMode checks that the socket file is created with the mode set
// before the bind, even under an umask that lets everything through: there
// is no moment with wider permissions.
func TestPresetMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		preset bool
		want   os.FileMode
	}{
		{"without preset", false, 0o777}, // shows what the preset prevents
		{"with preset", true, 0o600},
	} {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			if tc.preset {
				presetMode(rc, 0o600)
			}
			return nil
		}}
		path := filepath.Join(dir, tc.name)
		ln, err := lc.Listen(context.Background(), "unix", path)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != tc.want {
			t.Errorf("%s: socket file created with %v, want %v", tc.name, got, tc.want)
		}
	}
}
