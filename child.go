package molt

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// envHandoffFD is the environment marker a parent sets for its successor:
// the number of the descriptor that is the successor's end of the hand-off
// channel. It is molt's only environment variable; New removes it.
const envHandoffFD = "MOLT_HANDOFF_FD"

// connectParent connects to the parent over the descriptor named by
// envHandoffFD and reads the hello. On failure it tells the parent why (if
// the channel works at all) and leaves nothing open.
func (u *Upgrader) connectParent(fdText string) (handoff.Hello, error) {
	fd, err := strconv.Atoi(fdText)
	if err != nil || fd < 0 {
		return handoff.Hello{}, fmt.Errorf("molt: %s=%q is not a descriptor number", envHandoffFD, fdText)
	}
	// Only the channel of the process that started this one is used: a
	// stray or forged marker naming stdout, a log socket or any other
	// descriptor is refused, and that descriptor is left as it is.
	c, err := handoff.FromFD(fd, os.Getppid())
	if err != nil {
		return handoff.Hello{}, fmt.Errorf("molt: %s=%d is not a hand-off channel from the parent process: %w", envHandoffFD, fd, err)
	}
	c.SetDeadline(time.Now().Add(u.opts.readyTimeout())) // the whole hand-off; cleared once the inventory is in
	hello, err := c.RecvHello()
	if err == nil && hello.Generation < 2 {
		err = fmt.Errorf("parent announced generation %d (want 2 or more)", hello.Generation)
	}
	if err != nil {
		err = fmt.Errorf("molt: hand-off from parent: %w", err)
		c.SetWriteDeadline(time.Now().Add(time.Second))
		c.SendFailed(err.Error())
		c.Close()
		return handoff.Hello{}, err
	}
	u.generation, u.parentPID, u.parent = hello.Generation, hello.ParentPID, c
	u.inventoryDone = hello.Entries == 0
	n := min(hello.Entries, maxPrealloc)
	u.entries = make([]*entry, 0, n)
	u.inherited = make([]*entry, 0, n)
	return hello, nil
}

// maxPrealloc bounds the room reserved for the entries a HELLO announces.
const maxPrealloc = 16384

// receiveInventory receives the n entries the parent announced, a batch
// at a time, each one claimable as soon as it is in: the service's Listen
// calls run while the rest is still in transit (10,000 listeners take
// about 10 ms to arrive, which their claims, some 60 ms, now hide).
// Listen, the look-ups and Ready wait for what they need (see
// awaitInheritedLocked). A transfer that fails is reported to the parent
// and recorded for them to return. Then it watches the parent.
func (u *Upgrader) receiveInventory(n int) {
	err := u.parent.RecvInventoryBatches(n, u.addInherited)
	switch {
	case err == nil:
		u.parent.SetDeadline(time.Time{})
	case isDone(u.stopping): // Stop closed the channel
		err = ErrStopped
	default:
		err = fmt.Errorf("molt: hand-off from parent: %w", err)
		u.log.Error("molt: hand-off from parent failed", "err", err)
		u.sendMu.Lock()
		u.parent.SetWriteDeadline(time.Now().Add(time.Second))
		u.parent.SendFailed(err.Error())
		u.sendMu.Unlock()
		// A parent still sending gets EPIPE at once instead of blocking
		// on a full socket until its deadline, holding its listeners.
		u.parent.CloseRead()
	}
	u.mu.Lock()
	u.inventoryDone, u.inventoryErr = true, err
	u.inventoryArrived.Broadcast()
	u.mu.Unlock()
	if err != nil {
		// The channel is broken, but the parent lives on (and will end
		// this process): WaitForParent returns only at Stop.
		<-u.stopping
		close(u.parentGone)
		u.wg.Done()
		return
	}
	u.watchParent()
}

// addInherited books a batch of inherited entries, unclaimed, and wakes
// whoever waits for them. After Stop it closes them instead.
func (u *Upgrader) addInherited(wires []handoff.Entry, fds []int) {
	entries := make([]entry, len(wires)) // one allocation for the batch
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state == StateStopped { // Stop has closed the inventory already
		closeFDs(fds)
		return
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
		u.inherited = append(u.inherited, e)
		if u.unclaimed != nil {
			u.indexLocked(e)
		}
	}
	u.inventoryArrived.Broadcast()
}
