//go:build !unix

package molt

import "time"

// takerHandle: takeovers need Unix sockets ([New] returns ErrNotSupported
// here first).
type takerHandle struct{ pid int }

func newTakerHandle(pid int) *takerHandle          { return &takerHandle{pid: pid} }
func (t *takerHandle) waitGone(time.Duration) bool { return true }
func (t *takerHandle) kill()                       {}
func (t *takerHandle) close()                      {}

func setCloseOnExec(int) {}
