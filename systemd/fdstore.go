package systemd

import (
	"context"
	"fmt"
	"syscall"
)

// maxFDName is the longest descriptor name systemd accepts (FDNAME_MAX).
const maxFDName = 255

// Store puts a duplicate of c's descriptor into the service's file
// descriptor store under name (FDSTORE=1, FDNAME=name). systemd keeps it
// while the service restarts — after a crash with Restart=, or across
// `systemctl restart` — and passes it back to the next start in LISTEN_FDS,
// named in LISTEN_FDNAMES. A listening socket kept there stays open: clients
// wait in its accept queue instead of being refused.
//
// The unit needs FileDescriptorStoreMax= above zero; otherwise, or when the
// store is full, systemd drops the descriptor with a warning in the journal
// and Store cannot tell. systemd ignores a descriptor that is already in the
// store (the same open socket), but keeps two different sockets under one
// name: use [Notifier.RemoveStored] first to replace one. Storing requires
// the main process, as every notification does with NotifyAccess=main.
//
// c's descriptor is duplicated through SyscallConn (never
// (*os.File).Fd), so c's blocking mode is left alone; c stays the
// caller's. Store fails with [ErrInvalidMessage] for an invalid name (1 to
// 255 printable ASCII characters, no colon), and otherwise as
// [Notifier.Notify] does.
func (n *Notifier) Store(ctx context.Context, name string, c syscall.Conn) error {
	if err := checkFDName(name); err != nil {
		return err
	}
	fd, err := dupConn(c)
	if err != nil {
		return fmt.Errorf("systemd: store %q: %w", name, err)
	}
	defer closeFD(fd)
	return n.send(ctx, []byte("FDSTORE=1\nFDNAME="+name), []int{fd})
}

// RemoveStored closes every descriptor stored under name in the service's
// file descriptor store (FDSTOREREMOVE=1, FDNAME=name; systemd 236 and
// later). A name with nothing stored is not an error; systemd does not say.
// It fails as [Notifier.Store] does.
func (n *Notifier) RemoveStored(ctx context.Context, name string) error {
	if err := checkFDName(name); err != nil {
		return err
	}
	return n.send(ctx, []byte("FDSTOREREMOVE=1\nFDNAME="+name), nil)
}

// checkFDName validates a descriptor name as systemd does (fdname_is_valid):
// printable ASCII without colons, the separator of LISTEN_FDNAMES; we also
// refuse the empty name, which LISTEN_FDNAMES cannot carry.
func checkFDName(name string) error {
	if !validFDName(name) {
		return fmt.Errorf("%w: %q is not a descriptor name (1 to %d printable ASCII characters, no colon)",
			ErrInvalidMessage, name, maxFDName)
	}
	return nil
}

func validFDName(name string) bool {
	if name == "" || len(name) > maxFDName {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c > '~' || c == ':' {
			return false
		}
	}
	return true
}
