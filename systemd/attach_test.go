//go:build unix

package systemd_test

import (
	"errors"
	"testing"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/systemd"
)

// TestAttachTooLate: Attach after Ready fails with ErrTooLate, usable with
// errors.Is, and names the Upgrader's state.
func TestAttachTooLate(t *testing.T) {
	upg, err := molt.New(molt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer upg.Stop()
	if err := upg.Ready(); err != nil {
		t.Fatal(err)
	}
	svc, err := systemd.Attach(upg, systemd.Options{})
	if err == nil {
		svc.Close()
		t.Fatal("Attach after Ready succeeded")
	}
	if !errors.Is(err, systemd.ErrTooLate) || err.Error() != systemd.ErrTooLate.Error()+" (it is ready)" {
		t.Errorf("Attach after Ready = %q, want ErrTooLate naming the state", err)
	}
}
