package molt

import (
	"fmt"

	"github.com/moltgo/molt/internal/handoff"
)

// sendBatch is how many entries sendInventory sends at a time: one
// INVENTORY message's worth of descriptors.
const sendBatch = handoff.MaxFDsPerMessage

// sendInventory hands plan, the entries beginUpgrade chose, to the
// successor, a batch at a time, with the handles' own descriptors: no
// duplicates. That saves two system calls per entry and, more, keeps this
// process's descriptor table from growing: growing the table of a
// multi-threaded process waits for an RCU grace period, measured at 8 to
// 16 ms per doubling, which the hand-off of 1,000 listeners paid once and
// that of 10,000 twice.
//
// While a batch is sent its handles are held (see holdFDs): a concurrent
// Close waits for the send instead of closing a descriptor in flight. The
// hand-off carries every entry of plan as it was when the upgrade began:
// files are duplicated then (see beginUpgrade), and an entry whose user
// closes it before its batch went out is duplicated by release first (see
// keepForHandoffLocked).
func (u *Upgrader) sendInventory(c *handoff.Conn, plan []*entry) error {
	wires := make([]handoff.Entry, 0, min(len(plan), sendBatch))
	for len(plan) > 0 {
		batch := plan[:min(len(plan), sendBatch)]
		plan = plan[len(batch):]
		if err := u.sendBatch(c, batch, wires[:0]); err != nil {
			return err
		}
		if testHookBatchSent != nil {
			testHookBatchSent(len(batch), len(plan))
		}
	}
	return nil
}

// sendBatch sends the entries of batch in one INVENTORY message (two if
// their metadata is too large for one frame). wires is scratch space.
func (u *Upgrader) sendBatch(c *handoff.Conn, batch []*entry, wires []handoff.Entry) error {
	u.mu.Lock()
	locked := true
	defer func() {
		if locked {
			u.mu.Unlock()
		}
	}()
	fds := make([]int, len(batch)) // -1: the handle's own, filled in by holdFDs
	var held []liveHandle
	var early []int // duplicates made ahead (see Upgrader.earlyDups); closed once sent
	defer func() { closeFDs(early) }()
	for i, e := range batch {
		wires = append(wires, e.wire())
		e.unsent = false
		if fd, ok := u.earlyDups[e]; ok {
			delete(u.earlyDups, e)
			fds[i] = fd
			early = append(early, fd)
			continue
		}
		fds[i] = -1
		held = append(held, e.live)
	}
	err := holdFDs(held, func(own []int) error {
		// The handles are held: a Close must wait for the send now, so
		// release may run.
		u.mu.Unlock()
		locked = false
		for i := range fds {
			if fds[i] < 0 {
				fds[i], own = own[0], own[1:]
			}
		}
		return c.SendInventory(wires, fds) // the kernel holds them in flight once sent
	})
	if err != nil && locked { // a handle was closed behind the Upgrader's back
		for i, e := range batch {
			if fds[i] < 0 && !isOpen(e.live) {
				return fmt.Errorf("molt: %s was closed during the hand-off: %w", e.describe(), err)
			}
		}
	}
	return err
}

// holdFDs calls f with the descriptors of hs, in order, each one held by
// its handle's RawConn.Control for as long as f runs. The runtime closes a
// descriptor only once nothing uses it, so a concurrent Close waits for f
// to return instead of letting the number be reused under it. It fails,
// without calling f, if a handle is closed already.
func holdFDs(hs []liveHandle, f func([]int) error) error {
	fds := make([]int, 0, len(hs))
	var hold func(i int) error
	hold = func(i int) error {
		if i == len(hs) {
			return f(fds)
		}
		rc, err := hs[i].SyscallConn()
		if err != nil {
			return fmt.Errorf("%w: %w", errClosedHandle, err)
		}
		var ferr error
		if err := rc.Control(func(fd uintptr) {
			fds = append(fds, int(fd))
			ferr = hold(i + 1)
		}); err != nil {
			return fmt.Errorf("%w: %w", errClosedHandle, err)
		}
		return ferr
	}
	return hold(0)
}

// keepForHandoffLocked is called by release for an entry its user closes:
// if an upgrade has yet to send it, it gets a duplicate now, while the
// handle is still open.
func (u *Upgrader) keepForHandoffLocked(e *entry) {
	if !e.unsent {
		return
	}
	e.unsent = false
	fd, err := dupFD(e.live)
	if err != nil {
		return // closed already: sendBatch finds out and fails the upgrade, saying so
	}
	if u.earlyDups == nil {
		u.earlyDups = make(map[*entry]int)
	}
	u.earlyDups[e] = fd
}

// endSend forgets what an upgrade did not send: the marks of the entries
// it did not reach (it failed) and the duplicates made ahead for them.
func (u *Upgrader) endSend() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, e := range u.entries {
		e.unsent = false
	}
	for _, fd := range u.earlyDups {
		closeFD(fd)
	}
	u.earlyDups = nil
}

// testHookBatchSent, if not nil, is called by sendInventory after each
// batch, with the size of the batch and the number of entries still to
// send. Tests set it to act in the middle of a hand-off; nil in production.
var testHookBatchSent func(sent, left int)

func closeFDs(fds []int) {
	for _, fd := range fds {
		closeFD(fd)
	}
}
