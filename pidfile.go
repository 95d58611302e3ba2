package molt

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// writePIDFile writes this process's ID to Options.PIDFile atomically: a
// reader sees the old content or the new, never a partial file.
func (u *Upgrader) writePIDFile() error {
	path := u.opts.PIDFile
	if path == "" {
		return nil
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".*")
	if err != nil {
		return fmt.Errorf("molt: write PID file %s: %w", path, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.WriteString(strconv.Itoa(os.Getpid()) + "\n"); err != nil {
		return fmt.Errorf("molt: write PID file %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("molt: write PID file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("molt: write PID file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("molt: write PID file %s: %w", path, err)
	}
	ok = true
	return nil
}

// removePIDFile removes Options.PIDFile if it still names this process.
func (u *Upgrader) removePIDFile() {
	path := u.opts.PIDFile
	if path == "" {
		return
	}
	b, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(bytes.TrimSpace(b), []byte(strconv.Itoa(os.Getpid()))) {
		return
	}
	if err := os.Remove(path); err != nil {
		u.log.Warn("molt: cannot remove PID file", "path", path, "err", err)
	}
}
