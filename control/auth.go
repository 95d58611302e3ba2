package control

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"

	"github.com/moltgo/molt/internal/peercred"
)

// Who may use the control socket: the peer credentials of each connection
// (read in cred_*.go) against the service's user, root and Options.Group.
// The socket file's own mode and group are in sockfile*.go.

// authorize allows the service's own user, root, and members of
// Options.Group (by effective group).
func (s *Server) authorize(p peer) error { return authorizePeer(p, s.uid, s.gid) }

// authorizePeer allows uid, root and members of gid (if gid >= 0).
func authorizePeer(p peer, uid, gid int) error {
	if p.uid == uid || p.uid == 0 || (gid >= 0 && p.gid == gid) {
		return nil
	}
	if gid >= 0 {
		return fmt.Errorf("peer uid %d gid %d is not allowed (only uid %d, root and gid %d)", p.uid, p.gid, uid, gid)
	}
	return fmt.Errorf("peer uid %d is not allowed (only uid %d and root)", p.uid, uid)
}

// peer is the other end of a connection, as the kernel reports it.
type peer struct {
	pid, uid, gid int // -1 if unknown
}

func (p peer) attrs() []any {
	return []any{"peer_pid", p.pid, "peer_uid", p.uid, "peer_gid", p.gid}
}

// peerOf reads the credentials of c's peer.
func peerOf(c net.Conn) (peer, error) {
	cr, err := peercred.OfConn(c)
	if err != nil {
		return peer{-1, -1, -1}, fmt.Errorf("control: %w", err)
	}
	return peer{pid: cr.PID, uid: cr.UID, gid: cr.GID}, nil
}

// socketFile returns the socket file's mode and group ID (-1: none) that
// o asks for.
func (o Options) socketFile() (os.FileMode, int, error) {
	mode := o.Mode
	if mode == 0 {
		mode = DefaultMode
	}
	if mode&^os.ModePerm != 0 {
		return 0, -1, fmt.Errorf("control: Options.Mode %v has bits other than permissions", mode)
	}
	gid := -1
	if o.Group != "" {
		var err error
		if gid, err = lookupGroup(o.Group); err != nil {
			return 0, -1, err
		}
	}
	return mode, gid, nil
}

// lookupGroup resolves a group name or numeric ID.
func lookupGroup(name string) (int, error) {
	if id, err := strconv.Atoi(name); err == nil && id >= 0 {
		return id, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, fmt.Errorf("control: Options.Group: %w", err)
	}
	id, err := strconv.Atoi(g.Gid)
	if err != nil {
		return -1, fmt.Errorf("control: Options.Group %q has a non-numeric ID %q", name, g.Gid)
	}
	return id, nil
}
