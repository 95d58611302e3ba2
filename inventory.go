package molt

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/moltgo/molt/internal/handoff"
)

// The inventory: the handles that outlive a generation, and everything
// that happens to them — added or created (Listen, Add*), inherited
// (received from the parent) and claimed, planned and sent to a successor,
// released by their users, handed to the next generation or closed at
// Stop. Only the methods in this file read or write its fields and its
// entries' fields.

// entry is one handle of the inventory. An entry is either inherited and
// unclaimed (it owns fd) or live (it holds the object this process uses,
// and fd is -1).
type entry struct {
	kind    handoff.Kind
	network string // canonical network; "" for files
	key     string // canonical requested address; "" for named entries
	name    string // explicit name; "" for address-keyed entries

	fd     int        // inherited, not yet claimed: the descriptor this entry owns; else -1
	live   liveHandle // the object in use (never the wrapper handed out); nil while unclaimed
	handle any        // what the look-ups return: net.Listener, net.PacketConn, net.Conn or *os.File
	path   string     // Unix socket file served by this entry; "" for others
	pathID fileID     // identity of that file when it was bound; zero if unknown
	owns   bool       // this generation may remove path: it created it, or took it over at Ready
	wasInh bool       // inherited from the parent (for status and logs)
	unsent bool       // the running hand-off has yet to send it
}

// liveHandle is what every handle in use must be: closable, and able to
// lend its descriptor for a dup without (*os.File).Fd, which would switch a
// socket to blocking mode for every process sharing it.
type liveHandle interface {
	io.Closer
	syscall.Conn
}

// isOpen reports whether h's descriptor can still be reached: its owner has
// not closed it. It makes no system call.
func isOpen(h liveHandle) bool {
	if h == nil {
		return false
	}
	rc, err := h.SyscallConn()
	return err == nil && rc.Control(func(uintptr) {}) == nil
}

// fileID identifies a file independently of its name (st_dev, st_ino).
type fileID struct{ dev, ino uint64 }

func (id fileID) known() bool { return id != fileID{} }

// describe names an entry in errors and logs: "tcp [::]:8080" or "file \"state\"".
func (e *entry) describe() string {
	if e.name != "" {
		return e.kind.String() + " " + quote(e.name)
	}
	return e.network + " " + e.key
}

func quote(s string) string { return "\"" + s + "\"" }

// wire returns the entry's metadata as it crosses to the successor.
func (e *entry) wire() handoff.Entry {
	return handoff.Entry{
		Kind:    e.kind,
		Network: e.network,
		Addr:    e.key,
		Name:    e.name,
		PathDev: e.pathID.dev,
		PathIno: e.pathID.ino,
	}
}

// connWire names a connection accepted on this entry's listener.
func (e *entry) connWire() handoff.Entry {
	return handoff.Entry{Kind: handoff.KindConn, Network: e.network, Addr: e.key, Name: e.name}
}

// closeHandle closes what the entry holds: the live object, or the
// inherited descriptor nobody claimed.
func (e *entry) closeHandle() error {
	if l, ok := e.handle.(*listener); ok {
		l.closeQueue()
	}
	if e.live != nil {
		return e.live.Close()
	}
	if e.fd >= 0 {
		closeFD(e.fd)
		e.fd = -1
	}
	return nil
}

// invMode is what may happen to the inventory now.
type invMode int

const (
	invOpen      invMode = iota // entries may be added; released ones remove their socket files
	invSending                  // a hand-off is sending it to a successor
	invHandedOff                // a successor has it: this generation drains
	invClosed                   // Stop closed it
)

// inventory holds the entries, in inventory order.
type inventory struct {
	log *slog.Logger
	// send passes a connection's descriptor to the successor that took
	// over (see HandOver and listener.closeQueue); set once, by the
	// Upgrader.
	send func(w handoff.Entry, fd int) error

	mu      sync.Mutex // protects the fields below and every entry's fields
	mode    invMode
	entries []*entry
	// inherited lists the inherited entries in inventory order, and
	// next is where the first one not yet claimed may be: services claim
	// them in the order they were created, so that entry is tried first.
	// Only a claim out of that order builds unclaimed, an index by
	// address of the entries from next on, kept from then on. (Hashing
	// every entry cost 7 ms of a 10,000-listener hand-off; scanning for
	// each claim, before, 44 ms.)
	inherited []*entry
	next      int
	unclaimed map[inheritKey][]*entry
	// received is set once every inherited entry has arrived, or the
	// transfer failed with receiveErr; arrived is signalled with each
	// batch, at the end, and when the inventory closes. Generation 1 has
	// received everything from the start.
	received   bool
	receiveErr error
	arrived    sync.Cond
	// earlyDups holds duplicates made for the running hand-off before the
	// batch of their entry: of files (see plan) and of entries their users
	// closed before it was sent (see keepForHandoffLocked).
	earlyDups map[*entry]int
	// paused is set while the listeners do not accept (a probation, see
	// pauseAccept); it is closed when they accept again.
	paused chan struct{}
}

func newInventory(log *slog.Logger) *inventory {
	inv := &inventory{log: log, received: true}
	inv.arrived.L = &inv.mu
	return inv
}

// canAddLocked reports whether the inventory may grow now.
func (inv *inventory) canAddLocked() error {
	switch inv.mode {
	case invSending:
		return ErrUpgradeInProgress
	case invHandedOff:
		return ErrUpgraded
	case invClosed:
		return ErrStopped
	}
	return nil
}

// listenOn is the body of the Listen methods: claim the inherited socket
// with the canonical address sa, or create one (after removing a stale
// Unix socket file in the way), book and wrap it.
func listenOn[T any](inv *inventory, kind handoff.Kind, sa sockAddr, open func(*os.File) (T, error),
	create func() (T, error)) (T, error) {
	var zero T
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if err := inv.canAddLocked(); err != nil {
		return zero, err
	}
	e, err := inv.awaitInheritedLocked(kind, sa.network, sa.key, "")
	if err != nil {
		return zero, err
	}
	if e != nil {
		return claimLocked(inv, e, open)
	}
	if err := inv.canAddLocked(); err != nil { // it may have waited
		return zero, err
	}
	h, err := create()
	if err != nil && isAddrInUse(err) && inv.removeStaleSocketUnlocked(sa) {
		if err := inv.canAddLocked(); err != nil {
			return zero, err
		}
		h, err = create()
	}
	if err != nil {
		return zero, fmt.Errorf("molt: listen %s: %w", sa, err)
	}
	return adoptLocked(inv, inv.newEntryLocked(kind, sa, ""), h), nil
}

// addNamed is the body of the Add methods for sockets: check, book under
// name, wrap. local is the socket's own address.
func addNamed[T any](inv *inventory, kind handoff.Kind, name string, h T, local func() net.Addr, reserved bool) (T, error) {
	var zero T
	if _, ok := any(h).(syscall.Conn); !ok || name == "" {
		return zero, addError(name, h)
	}
	if err := checkName(name, reserved); err != nil {
		return zero, err
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if err := inv.canAddNamedLocked(kind, name); err != nil {
		return zero, err
	}
	return adoptLocked(inv, inv.newEntryLocked(kind, namedAddr(local()), name), h), nil
}

// addFile books f under name.
func (inv *inventory) addFile(name string, f *os.File, reserved bool) error {
	if f == nil || name == "" {
		return addError(name, f)
	}
	if err := checkName(name, reserved); err != nil {
		return err
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if err := inv.canAddNamedLocked(handoff.KindFile, name); err != nil {
		return err
	}
	e := inv.newEntryLocked(handoff.KindFile, sockAddr{}, name)
	e.live, e.handle = f, f
	return nil
}

// lookup returns the handle of the entry of kind named name, claiming an
// inherited one.
func (inv *inventory) lookup(kind handoff.Kind, name string) (any, error) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.mode == invClosed {
		return nil, ErrStopped
	}
	e, err := inv.awaitNamedLocked(kind, name)
	switch {
	case inv.mode == invClosed: // it may have waited, and Stop come meanwhile
		return nil, ErrStopped
	case e == nil && err == nil:
		return nil, fmt.Errorf("%w: %s %s", ErrNotFound, kind, quote(name))
	case e == nil:
		return nil, err
	case e.handle != nil:
		return e.handle, nil
	}
	switch kind {
	case handoff.KindListener:
		return claimLocked(inv, e, net.FileListener)
	case handoff.KindPacketConn:
		return claimLocked(inv, e, net.FilePacketConn)
	case handoff.KindConn:
		return claimLocked(inv, e, net.FileConn)
	default:
		f := os.NewFile(uintptr(e.fd), "molt:"+name)
		e.fd, e.live, e.handle = -1, f, f
		return f, nil
	}
}

// awaitNamedLocked returns the entry of kind named name, waiting while the
// inventory is still arriving; nil if there is none (then the error that
// ended the transfer, if any). inv.mu is released while it waits.
func (inv *inventory) awaitNamedLocked(kind handoff.Kind, name string) (*entry, error) {
	if name == "" {
		return nil, nil
	}
	for {
		if inv.mode == invClosed {
			return nil, ErrStopped
		}
		for _, e := range inv.entries {
			if e.kind == kind && e.name == name {
				return e, nil
			}
		}
		if inv.received {
			return nil, inv.receiveErr
		}
		inv.arrived.Wait()
	}
}

// namedAddr describes a socket added by hand: its network and local
// address (a Unix socket path made absolute), for status and for the
// socket file it may serve.
func namedAddr(a net.Addr) sockAddr {
	sa := sockAddr{network: a.Network(), key: a.String()}
	if p := socketPath(sa.network, sa.key); p != "" {
		if abs, err := filepath.Abs(p); err == nil {
			sa.key = abs
		}
	}
	return sa
}

func addError(name string, h any) error {
	if name == "" {
		return errors.New("molt: an inventory entry added by hand needs a name")
	}
	return fmt.Errorf("molt: %T cannot be handed over: it has no descriptor (no SyscallConn method)", h)
}

func (inv *inventory) canAddNamedLocked(kind handoff.Kind, name string) error {
	if err := inv.canAddLocked(); err != nil {
		return err
	}
	if err := inv.awaitAllLocked(); err != nil {
		return err // an inherited entry of that name may be lost
	}
	if err := inv.canAddLocked(); err != nil { // it may have waited
		return err
	}
	for _, e := range inv.entries {
		if e.kind == kind && e.name == name {
			return fmt.Errorf("%w: %s %s", ErrNameInUse, kind, quote(name))
		}
	}
	return nil
}

// newEntryLocked appends a new, not yet live entry for a socket this
// generation creates or adopts.
func (inv *inventory) newEntryLocked(kind handoff.Kind, sa sockAddr, name string) *entry {
	e := &entry{kind: kind, network: sa.network, key: sa.key, name: name, fd: -1}
	if e.path = socketPath(sa.network, sa.key); e.path != "" && kind != handoff.KindConn {
		e.pathID, _ = statSocketFile(e.path)
		// molt removes only the files it bound itself; a socket added by
		// hand belongs to whoever made it (a systemd .socket unit, say).
		e.owns = name == ""
	}
	inv.entries = append(inv.entries, e)
	return e
}

// inheritKey is what an inherited entry is claimed by.
type inheritKey struct {
	kind               handoff.Kind
	network, key, name string
}

func (e *entry) inheritKey() inheritKey {
	return inheritKey{kind: e.kind, network: e.network, key: e.key, name: e.name}
}

// inheritedLocked finds the first unclaimed inherited entry with this key,
// in inventory order, among those that have arrived. It tries the next
// entry in inventory order first; a claim out of order builds the index
// (see inventory.inherited). Entries claimed or closed meanwhile (their fd
// is -1) are passed over.
func (inv *inventory) inheritedLocked(kind handoff.Kind, network, key, name string) *entry {
	for inv.next < len(inv.inherited) && inv.inherited[inv.next].fd < 0 {
		inv.next++
	}
	if inv.next == len(inv.inherited) {
		return nil // nothing unclaimed has arrived (yet)
	}
	if e := inv.inherited[inv.next]; e.kind == kind && e.network == network && e.key == key && e.name == name {
		return e
	}
	if inv.unclaimed == nil {
		inv.unclaimed = make(map[inheritKey][]*entry)
		for _, e := range inv.inherited[inv.next:] {
			if e.fd >= 0 {
				inv.indexLocked(e)
			}
		}
	}
	k := inheritKey{kind: kind, network: network, key: key, name: name}
	q := inv.unclaimed[k]
	for len(q) > 0 && q[0].fd < 0 {
		q[0] = nil
		q = q[1:]
	}
	if len(q) == 0 {
		delete(inv.unclaimed, k)
		return nil
	}
	inv.unclaimed[k] = q
	return q[0]
}

// indexLocked adds an unclaimed inherited entry to the index.
func (inv *inventory) indexLocked(e *entry) {
	k := e.inheritKey()
	inv.unclaimed[k] = append(inv.unclaimed[k], e)
}

// awaitInheritedLocked is inheritedLocked for a successor whose inventory
// may still be arriving: it waits until an entry with this key is in, or
// the whole inventory (then nil, and the error that ended the transfer if
// any). Entries arrive in inventory order, so the first one found is the
// first of the inventory. inv.mu is released while it waits; after Stop
// it returns ErrStopped.
func (inv *inventory) awaitInheritedLocked(kind handoff.Kind, network, key, name string) (*entry, error) {
	for {
		if inv.mode == invClosed { // Stop closes the entries without inv.mu
			return nil, ErrStopped
		}
		if e := inv.inheritedLocked(kind, network, key, name); e != nil {
			return e, nil
		}
		if inv.received {
			return nil, inv.receiveErr
		}
		inv.arrived.Wait()
	}
}

// awaitAll waits until the whole inventory has arrived and returns the
// error that ended the transfer, if any; after Stop, ErrStopped.
func (inv *inventory) awaitAll() error {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.awaitAllLocked()
}

func (inv *inventory) awaitAllLocked() error {
	for !inv.received {
		if inv.mode == invClosed {
			return ErrStopped
		}
		inv.arrived.Wait()
	}
	return inv.receiveErr
}

// claimLocked turns an inherited descriptor into the object open makes of
// it (net.FileListener and its siblings, which duplicate it close-on-exec
// and non-blocking), closes the entry's own descriptor and wraps it.
// os.NewFile does not mark the file as one it made non-blocking, so the Fd
// call inside net.File* cannot switch the socket, shared with the parent
// that still serves on it, to blocking mode. An entry that cannot be
// opened leaves the inventory. It runs with inv.mu held throughout:
// releasing it for the system calls measured no faster, and would let a
// look-up, Ready or Stop meet an entry that is neither inherited nor live.
func claimLocked[T any](inv *inventory, e *entry, open func(*os.File) (T, error)) (T, error) {
	// The file lives only for open's duration, and errors name e anyway:
	// a constant name saves two allocations per inherited socket.
	f := os.NewFile(uintptr(e.fd), "molt-inherited")
	e.fd = -1
	h, err := open(f)
	f.Close()
	if err != nil {
		inv.removeLocked(e)
		return h, fmt.Errorf("molt: inherited %s is not a usable %s: %w", e.describe(), e.kind, err)
	}
	return adoptLocked(inv, e, h), nil
}

// adoptLocked makes h, a socket of e's kind, the live object of e and
// returns the wrapper the service uses (see listen.go), whose Close
// releases e.
func adoptLocked[T any](inv *inventory, e *entry, h T) T {
	var w any
	switch e.kind {
	case handoff.KindListener:
		ln := any(h).(net.Listener)
		if ul, ok := ln.(*net.UnixListener); ok {
			// molt decides when the socket file goes, not Go's Close.
			ul.SetUnlinkOnClose(false)
		}
		w = newListener(ln, inv, e)
	case handoff.KindPacketConn:
		w = &packetConn{PacketConn: any(h).(net.PacketConn), inv: inv, e: e}
	default:
		w = &conn{Conn: any(h).(net.Conn), inv: inv, e: e}
	}
	e.live, e.handle = any(h).(liveHandle), w
	return w.(T)
}

// removeLocked takes e out of the inventory and reports whether it was there.
func (inv *inventory) removeLocked(e *entry) bool {
	for i, x := range inv.entries {
		if x == e {
			inv.entries = append(inv.entries[:i], inv.entries[i+1:]...)
			return true
		}
	}
	return false
}

// release is the Close of a handle given out: it leaves the inventory, is
// closed, and its Unix socket file is removed if this generation serves it
// and no successor may.
func (inv *inventory) release(e *entry) error {
	inv.mu.Lock()
	inv.keepForHandoffLocked(e)
	removed := inv.removeLocked(e)
	unlink := removed && e.owns && inv.mode == invOpen
	inv.mu.Unlock()
	err := e.live.Close()
	if unlink {
		inv.removeSocketFile(e)
	}
	return err
}

// removeSocketFile removes e's Unix socket file if it is still the file e
// bound (a later process may have bound a new socket at the same path).
func (inv *inventory) removeSocketFile(e *entry) {
	if e.path == "" {
		return
	}
	removed, err := removeSocketFileIfSame(e.path, e.pathID)
	switch {
	case err != nil:
		inv.log.Warn("molt: cannot remove socket file", "path", e.path, "err", err)
	case removed:
		inv.log.Debug("molt: removed socket file", "path", e.path)
	}
}

// removeStaleSocketUnlocked removes a Unix socket file that no process
// serves (a crashed run left it behind) so that a new socket can be bound
// there. A file that is not a socket, or one a process still accepts on,
// is left. It releases inv.mu while it dials (which may take a second).
func (inv *inventory) removeStaleSocketUnlocked(sa sockAddr) bool {
	inv.mu.Unlock()
	defer inv.mu.Lock()
	path := socketPath(sa.network, sa.key)
	if path == "" || !isStaleSocket(sa.network, path) {
		return false
	}
	if err := os.Remove(path); err != nil {
		return false
	}
	inv.log.Info("molt: removed stale socket file", "path", path)
	return true
}

func isAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }

// ---- receiving: the successor's side of the hand-off ----

// expect prepares for the n entries a HELLO announced.
func (inv *inventory) expect(n int) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.received = n == 0
	n = min(n, maxPrealloc)
	inv.entries = make([]*entry, 0, n)
	inv.inherited = make([]*entry, 0, n)
}

// maxPrealloc bounds the room reserved for the entries a HELLO announces.
const maxPrealloc = 16384

// receive books a batch of inherited entries, unclaimed, and wakes whoever
// waits for them. After Stop it closes them instead.
func (inv *inventory) receive(wires []handoff.Entry, fds []int) {
	entries := make([]entry, len(wires)) // one allocation for the batch
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.mode == invClosed { // Stop has closed the inventory already
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
		inv.entries = append(inv.entries, e)
		inv.inherited = append(inv.inherited, e)
		if inv.unclaimed != nil {
			inv.indexLocked(e)
		}
	}
	inv.arrived.Broadcast()
}

// received records the end of the transfer, err if it failed.
func (inv *inventory) receiveEnded(err error) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.received, inv.receiveErr = true, err
	inv.arrived.Broadcast()
}

// takeOver is Ready's part: the inherited entries nobody claimed leave
// the inventory (returned, for the caller to close once the parent knows),
// and this generation now owns the socket files it serves: the parent
// stops serving what it handed over. Files of entries added by hand stay
// their creator's.
func (inv *inventory) takeOver() (unclaimed []*entry) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	kept := inv.entries[:0]
	for _, e := range inv.entries {
		if e.fd >= 0 {
			unclaimed = append(unclaimed, e)
			continue
		}
		e.owns = e.path != "" && e.name == ""
		kept = append(kept, e)
	}
	clear(inv.entries[len(kept):])
	inv.entries = kept
	// Nothing inherited is left to claim: the bookkeeping can go.
	inv.inherited, inv.next, inv.unclaimed = nil, 0, nil
	return unclaimed
}

// ---- sending: the parent's side of the hand-off ----

// plan starts a hand-off: it returns the entries to send, in inventory
// order, and refuses new entries until endSend. A file closed behind the
// Upgrader's back (by its user, not through molt) leaves the inventory.
// Only a file can be: every socket is handed out wrapped, and its Close
// goes through release. File gives out the *os.File itself, which its user
// may close during the hand-off too: files are duplicated now, so each
// goes over as it is at this moment (or is left out, closed already).
func (inv *inventory) plan() ([]*entry, error) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if err := inv.canAddLocked(); err != nil {
		return nil, err
	}
	dups := make(map[*entry]int)
	for _, e := range inv.entries {
		if e.kind != handoff.KindFile {
			continue
		}
		fd, err := dupFD(e.live)
		if err != nil && !errors.Is(err, errClosedHandle) {
			for _, fd := range dups {
				closeFD(fd)
			}
			return nil, fmt.Errorf("molt: duplicate %s for the hand-off: %w", e.describe(), err)
		}
		if err == nil {
			dups[e] = fd
		}
	}
	kept := inv.entries[:0]
	for _, e := range inv.entries {
		_, dup := dups[e]
		if (e.kind == handoff.KindFile && !dup) || (e.kind != handoff.KindFile && !isOpen(e.live)) {
			inv.log.Info("molt: entry closed by its user; left out of the hand-off", "entry", e.describe())
			continue
		}
		e.unsent = true
		kept = append(kept, e)
	}
	clear(inv.entries[len(kept):])
	inv.entries = kept
	inv.earlyDups = dups
	inv.mode = invSending
	return append([]*entry(nil), kept...), nil
}

// sendBatch hands one batch of the plan to send with the descriptors to
// send: the handles' own, each held by its RawConn.Control while send
// runs (see holdFDs), so that a concurrent Close waits for the send
// instead of letting the number be reused in flight; or a duplicate made
// ahead (earlyDups), closed once sent. wires is scratch space.
func (inv *inventory) sendBatch(batch []*entry, wires []handoff.Entry, send func([]handoff.Entry, []int) error) error {
	inv.mu.Lock()
	locked := true
	defer func() {
		if locked {
			inv.mu.Unlock()
		}
	}()
	fds := make([]int, len(batch)) // -1: the handle's own, filled in by holdFDs
	var held []liveHandle
	var early []int
	defer func() { closeFDs(early) }()
	for i, e := range batch {
		wires = append(wires, e.wire())
		e.unsent = false
		if fd, ok := inv.earlyDups[e]; ok {
			delete(inv.earlyDups, e)
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
		inv.mu.Unlock()
		locked = false
		for i := range fds {
			if fds[i] < 0 {
				fds[i], own = own[0], own[1:]
			}
		}
		return send(wires, fds) // the kernel holds them in flight once sent
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
// if a hand-off has yet to send it, it gets a duplicate now, while the
// handle is still open.
func (inv *inventory) keepForHandoffLocked(e *entry) {
	if !e.unsent {
		return
	}
	e.unsent = false
	fd, err := dupFD(e.live)
	if err != nil {
		return // closed already: sendBatch finds out and fails the upgrade, saying so
	}
	if inv.earlyDups == nil {
		inv.earlyDups = make(map[*entry]int)
	}
	inv.earlyDups[e] = fd
}

// endSend ends a hand-off: it forgets what was not sent (the marks of the
// entries it did not reach and the duplicates made ahead for them), and
// either hands the inventory over for good (the successor took over) or
// opens it again (the upgrade failed).
func (inv *inventory) endSend(handedOff bool) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	for _, e := range inv.entries {
		e.unsent = false
	}
	for _, fd := range inv.earlyDups {
		closeFD(fd)
	}
	inv.earlyDups = nil
	if inv.mode == invSending {
		inv.mode = invOpen
		if handedOff {
			inv.mode = invHandedOff
		}
	}
}

// ---- the end ----

// close is Stop's part: every entry is closed (handles given out
// included), and, unless a successor took the inventory over, the socket
// files this generation serves are removed. Waiters wake with ErrStopped.
func (inv *inventory) close() {
	inv.mu.Lock()
	handedOff := inv.mode == invHandedOff
	inv.mode = invClosed
	entries := inv.entries
	inv.entries = nil
	inv.inherited, inv.next, inv.unclaimed = nil, 0, nil
	inv.arrived.Broadcast()
	inv.mu.Unlock()
	for _, e := range entries {
		e.closeHandle()
		if e.owns && !handedOff {
			inv.removeSocketFile(e)
		}
	}
}

// listenerFor returns the listener of this generation that a connection
// handed over from the parent belongs to (the one it was accepted on), or
// nil.
func (inv *inventory) listenerFor(w handoff.Entry) *listener {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	for _, e := range inv.entries {
		if e.kind != handoff.KindListener || e.network != w.Network || e.name != w.Name ||
			(e.name == "" && e.key != w.Addr) {
			continue
		}
		if l, ok := e.handle.(*listener); ok {
			return l
		}
	}
	return nil
}

// stats describes the entries, in inventory order.
func (inv *inventory) stats() []EntryStats {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	out := make([]EntryStats, 0, len(inv.entries))
	for _, e := range inv.entries {
		out = append(out, EntryStats{
			Kind:      entryKind(e.kind),
			Network:   e.network,
			Addr:      e.key,
			Name:      e.name,
			Inherited: e.wasInh,
			Claimed:   e.fd < 0,
			Local:     localAddr(e.live),
		})
	}
	return out
}

// localAddr is the bound address of a live socket, "" for anything else.
func localAddr(h liveHandle) string {
	switch h := h.(type) {
	case net.Listener:
		return h.Addr().String()
	case net.PacketConn:
		return h.LocalAddr().String()
	case net.Conn:
		return h.LocalAddr().String()
	}
	return ""
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		closeFD(fd)
	}
}
