// Package peercred reads the credentials the kernel recorded for the peer
// of a connected Unix socket: SO_PEERCRED on Linux, LOCAL_PEERCRED (and
// LOCAL_PEERPID) on macOS and FreeBSD. The control socket and the
// takeover socket authenticate with it.
package peercred

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// Cred is the peer of a connection; a field is -1 where the system does
// not say.
type Cred struct {
	PID, UID, GID int
}

// ErrNotSupported is returned by Of where the system has no
// peer-credential call that golang.org/x/sys/unix exposes.
var ErrNotSupported = errors.New("peer credentials not supported on this platform")

var unknown = Cred{-1, -1, -1}

// OfConn reads the credentials of c's peer through its SyscallConn (never
// through File, which would duplicate the descriptor).
func OfConn(c net.Conn) (Cred, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return unknown, fmt.Errorf("peer credentials: %T has no descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return unknown, fmt.Errorf("peer credentials: %w", err)
	}
	p, perr := unknown, error(nil)
	if err := rc.Control(func(fd uintptr) { p, perr = Of(int(fd)) }); err != nil {
		return unknown, fmt.Errorf("peer credentials: %w", err)
	}
	if perr != nil {
		return unknown, fmt.Errorf("peer credentials: %w", perr)
	}
	return p, nil
}
