package molt

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// envHandoffFD is the environment marker a parent sets for its successor:
// the number of the descriptor that is the successor's end of the hand-off
// channel. It is molt's only environment variable; New removes it.
const envHandoffFD = "MOLT_HANDOFF_FD"

// receiveFromParent connects to the parent over the descriptor named by
// envHandoffFD, reads the hello and the inventory, and fills u. On failure
// it tells the parent why (if the channel works at all) and leaves nothing
// open.
func (u *Upgrader) receiveFromParent(fdText string) error {
	fd, err := strconv.Atoi(fdText)
	if err != nil || fd < 0 {
		return fmt.Errorf("molt: %s=%q is not a descriptor number", envHandoffFD, fdText)
	}
	c, err := handoff.FromFD(fd)
	if err != nil {
		return fmt.Errorf("molt: %s=%d: %w", envHandoffFD, fd, err)
	}
	fail := func(err error) error {
		err = fmt.Errorf("molt: hand-off from parent: %w", err)
		c.SetWriteDeadline(time.Now().Add(time.Second))
		c.SendFailed(err.Error())
		c.Close()
		return err
	}
	c.SetDeadline(time.Now().Add(u.opts.readyTimeout()))
	hello, err := c.RecvHello()
	if err != nil {
		return fail(err)
	}
	if hello.Generation < 2 {
		return fail(fmt.Errorf("parent announced generation %d (want 2 or more)", hello.Generation))
	}
	wires, fds, err := c.RecvInventory(hello.Entries)
	if err != nil {
		return fail(err)
	}
	c.SetDeadline(time.Time{})

	u.generation = hello.Generation
	u.parentPID = hello.ParentPID
	u.parent = c
	// One allocation for all entries and one for the index's queues, not
	// one per entry: a successor of a process with 10,000 listeners
	// spends its time on the hand-off, not on the allocator.
	entries := make([]entry, len(wires))
	queues := make([]*entry, len(wires))
	u.entries = slices.Grow(u.entries, len(wires))
	if u.unclaimed == nil {
		u.unclaimed = make(map[inheritKey][]*entry, len(wires))
	}
	for i, w := range wires {
		path := socketPath(w.Network, w.Addr)
		if w.Kind == handoff.KindConn {
			path = "" // a connection's local address is its listener's file, not its own
		}
		e := &entries[i]
		*e = entry{
			kind:    w.Kind,
			network: w.Network,
			key:     w.Addr,
			name:    w.Name,
			fd:      fds[i],
			path:    path,
			pathID:  fileID{dev: w.PathDev, ino: w.PathIno},
			wasInh:  true,
		}
		u.entries = append(u.entries, e)
		k := e.inheritKey()
		if q, ok := u.unclaimed[k]; ok {
			u.unclaimed[k] = append(q, e) // several sockets under one address
		} else {
			queues[i] = e
			u.unclaimed[k] = queues[i : i+1 : i+1]
		}
	}
	return nil
}
