//go:build !linux

package supervise

import (
	"context"
	"syscall"

	"github.com/moltgo/molt/control"
)

// Supervisor runs a program and replaces it without closing its sockets;
// outside Linux [New] returns [ErrNotSupported].
type Supervisor struct{ done chan struct{} }

// New returns [ErrNotSupported] outside Linux.
func New(Options) (*Supervisor, error) { return nil, ErrNotSupported }

// Start is not supported here.
func (s *Supervisor) Start(context.Context) error { return ErrNotSupported }

// Upgrade is not supported here.
func (s *Supervisor) Upgrade(context.Context, uint64) (*control.UpgradeResult, error) {
	return nil, ErrNotSupported
}

// Stop does nothing here.
func (s *Supervisor) Stop() {}

// StopWith does nothing here.
func (s *Supervisor) StopWith(syscall.Signal) {}

// Signal is not supported here.
func (s *Supervisor) Signal(syscall.Signal) error { return ErrNotSupported }

// Done is never closed here.
func (s *Supervisor) Done() <-chan struct{} { return s.done }

// ExitCode is 1 here.
func (s *Supervisor) ExitCode() int { return 1 }

// Close does nothing here.
func (s *Supervisor) Close() error { return nil }

// Status is empty here.
func (s *Supervisor) Status() control.Status { return control.Status{} }

// OrphansReaped is 0 here.
func OrphansReaped() uint64 { return 0 }
