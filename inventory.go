package molt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"github.com/moltgo/molt/internal/handoff"
)

// Listen returns a listener for network ("tcp", "tcp4", "tcp6", "unix" or
// "unixpacket") and addr: the one inherited from the previous generation
// under the same canonical address if there is one, a new one otherwise.
//
// Addresses are compared as the kernel binds them: with network "tcp",
// ":8080", "0.0.0.0:8080" and "[::]:8080" are one socket; a host name is
// resolved once, before anything is locked. A ":0" listener keeps the port
// the kernel chose for the first generation. Listeners with the same
// address (SO_REUSEPORT, ":0") are matched in the order they were created.
// While the inventory is still arriving (see [New]), Listen waits until
// the entry it claims is in, or until the whole inventory is and none
// matched; if the transfer failed, it returns that error instead of
// creating a socket the parent may still hold.
//
// Closing the returned listener removes it from the inventory and closes the
// socket in this process; the port stays open only if a successor holds it.
// Unix socket files are never removed by Go's own Close: molt removes them
// when the generation that serves them closes them, and never while another
// generation may serve them.
//
// The listener's Accept also returns the idle connections the previous
// generation handed over ([HandOver]). The connections it returns wrap the
// kernel's so that they can be handed over in turn; their NetConn method
// returns the *net.TCPConn or *net.UnixConn, and the listener's
// SyscallConn gives access to the listening socket.
//
// Listen fails with [ErrUpgradeInProgress], [ErrUpgraded] or [ErrStopped] in
// those states.
func (u *Upgrader) Listen(network, addr string) (net.Listener, error) {
	return u.ListenWith(context.Background(), nil, network, addr)
}

// ListenWith is [Upgrader.Listen] with the net.ListenConfig used to create a
// socket that is not inherited (nil means [Options.ListenConfig]); use its
// Control field to set socket options. ctx bounds the creation only.
func (u *Upgrader) ListenWith(ctx context.Context, lc *net.ListenConfig, network, addr string) (net.Listener, error) {
	sa, err := canonicalAddr(network, addr, false)
	if err != nil {
		return nil, err
	}
	return listenKind(u, handoff.KindListener, sa, u.claimListenerLocked, func() (net.Listener, error) {
		return u.listenConfig(lc).Listen(ctx, sa.network, sa.bind)
	}, u.adoptListenerLocked)
}

// ListenPacket returns a packet socket for network ("udp", "udp4", "udp6"
// or "unixgram") and addr, inherited or new, under the same rules as
// [Upgrader.Listen]. Closing it releases the inventory entry.
func (u *Upgrader) ListenPacket(network, addr string) (net.PacketConn, error) {
	return u.ListenPacketWith(context.Background(), nil, network, addr)
}

// ListenPacketWith is [Upgrader.ListenPacket] with the net.ListenConfig used
// to create a socket that is not inherited (nil means [Options.ListenConfig]).
func (u *Upgrader) ListenPacketWith(ctx context.Context, lc *net.ListenConfig, network, addr string) (net.PacketConn, error) {
	sa, err := canonicalAddr(network, addr, true)
	if err != nil {
		return nil, err
	}
	return listenKind(u, handoff.KindPacketConn, sa, u.claimPacketConnLocked, func() (net.PacketConn, error) {
		return u.listenConfig(lc).ListenPacket(ctx, sa.network, sa.bind)
	}, u.adoptPacketConnLocked)
}

// listenKind is the body of ListenWith and ListenPacketWith: claim the
// inherited socket with the canonical address sa, or create one (after
// removing a stale Unix socket file in the way), book and wrap it.
func listenKind[T any](u *Upgrader, kind handoff.Kind, sa sockAddr, claim func(*entry) (T, error),
	create func() (T, error), adopt func(*entry, T) (T, error)) (T, error) {
	var zero T
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.canAddLocked(); err != nil {
		return zero, err
	}
	e, err := u.awaitInheritedLocked(kind, sa.network, sa.key, "")
	if err != nil {
		return zero, err
	}
	if e != nil {
		return claim(e)
	}
	if err := u.canAddLocked(); err != nil { // it may have waited
		return zero, err
	}
	h, err := create()
	if err != nil && isAddrInUse(err) && u.removeStaleSocketUnlocked(sa) {
		if err := u.canAddLocked(); err != nil {
			return zero, err
		}
		h, err = create()
	}
	if err != nil {
		return zero, fmt.Errorf("molt: listen %s: %w", sa, err)
	}
	return adopt(u.newEntryLocked(kind, sa, ""), h)
}

// AddListener puts a listener this process made itself (from systemd, a
// custom socket) into the inventory under name, so the next generation can
// claim it with [Upgrader.Listener]. The Upgrader takes ownership of ln:
// use the returned listener, whose Close releases the entry. molt never
// removes the socket file of a Unix listener added this way: it belongs to
// whoever created it. ln must implement syscall.Conn (every
// *net.TCPListener and *net.UnixListener does). It fails with
// [ErrNameInUse] if a listener with that name is already in the inventory,
// inherited ones included.
func (u *Upgrader) AddListener(name string, ln net.Listener) (net.Listener, error) {
	return addNamed(u, handoff.KindListener, name, ln, func() net.Addr { return ln.Addr() }, u.adoptListenerLocked)
}

// AddPacketConn is [Upgrader.AddListener] for a packet socket.
func (u *Upgrader) AddPacketConn(name string, pc net.PacketConn) (net.PacketConn, error) {
	return addNamed(u, handoff.KindPacketConn, name, pc, func() net.Addr { return pc.LocalAddr() }, u.adoptPacketConnLocked)
}

// AddConn puts a connected socket into the inventory under name; the next
// generation claims it with [Upgrader.Conn] and continues the same
// connection. The Upgrader takes ownership of c: use the returned conn.
func (u *Upgrader) AddConn(name string, c net.Conn) (net.Conn, error) {
	return addNamed(u, handoff.KindConn, name, c, func() net.Addr { return c.LocalAddr() }, u.adoptConnLocked)
}

// addNamed is the body of the Add methods for sockets: check, book under
// name, wrap.
func addNamed[T any](u *Upgrader, kind handoff.Kind, name string, h T, local func() net.Addr,
	adopt func(*entry, T) (T, error)) (T, error) {
	var zero T
	if _, ok := any(h).(syscall.Conn); !ok || name == "" {
		return zero, addError(name, h)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.canAddNamedLocked(kind, name); err != nil {
		return zero, err
	}
	return adopt(u.newEntryLocked(kind, namedAddr(local()), name), h)
}

// AddFile puts any open file (a pipe, a memfd, a lock file) into the
// inventory under name; the next generation claims it with [Upgrader.File].
// The Upgrader takes ownership of f and closes it in [Upgrader.Stop]; a file
// closed earlier is left out of the next hand-off.
func (u *Upgrader) AddFile(name string, f *os.File) error {
	if f == nil || name == "" {
		return addError(name, f)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.canAddNamedLocked(handoff.KindFile, name); err != nil {
		return err
	}
	e := u.newEntryLocked(handoff.KindFile, sockAddr{}, name)
	e.live, e.handle = f, f
	return nil
}

// Listener returns the listener named name: inherited from the previous
// generation (claimed by this call), or added with [Upgrader.AddListener]
// in this one. It fails with [ErrNotFound] if there is none.
func (u *Upgrader) Listener(name string) (net.Listener, error) {
	h, err := u.lookup(handoff.KindListener, name)
	if err != nil {
		return nil, err
	}
	return h.(net.Listener), nil
}

// PacketConn is [Upgrader.Listener] for packet sockets.
func (u *Upgrader) PacketConn(name string) (net.PacketConn, error) {
	h, err := u.lookup(handoff.KindPacketConn, name)
	if err != nil {
		return nil, err
	}
	return h.(net.PacketConn), nil
}

// Conn is [Upgrader.Listener] for connected sockets.
func (u *Upgrader) Conn(name string) (net.Conn, error) {
	h, err := u.lookup(handoff.KindConn, name)
	if err != nil {
		return nil, err
	}
	return h.(net.Conn), nil
}

// File is [Upgrader.Listener] for files. The Upgrader keeps ownership of
// the returned file and closes it in [Upgrader.Stop].
func (u *Upgrader) File(name string) (*os.File, error) {
	h, err := u.lookup(handoff.KindFile, name)
	if err != nil {
		return nil, err
	}
	return h.(*os.File), nil
}

func (u *Upgrader) lookup(kind handoff.Kind, name string) (any, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state == StateStopped {
		return nil, ErrStopped
	}
	e, err := u.awaitNamedLocked(kind, name)
	switch {
	case u.state == StateStopped: // it may have waited, and Stop come meanwhile
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
		return u.claimListenerLocked(e)
	case handoff.KindPacketConn:
		return u.claimPacketConnLocked(e)
	case handoff.KindConn:
		return u.claimConnLocked(e)
	default:
		f := os.NewFile(uintptr(e.fd), "molt:"+name)
		e.fd, e.live, e.handle = -1, f, f
		return f, nil
	}
}

// awaitNamedLocked returns the entry of kind named name, waiting while the
// inventory is still arriving; nil if there is none (then the error that
// ended the transfer, if any). u.mu is released while it waits.
func (u *Upgrader) awaitNamedLocked(kind handoff.Kind, name string) (*entry, error) {
	if name == "" {
		return nil, nil
	}
	for {
		if u.state == StateStopped {
			return nil, ErrStopped
		}
		for _, e := range u.entries {
			if e.kind == kind && e.name == name {
				return e, nil
			}
		}
		if u.inventoryDone {
			return nil, u.inventoryErr
		}
		u.inventoryArrived.Wait()
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

// canAddLocked reports whether the inventory may grow in this state.
func (u *Upgrader) canAddLocked() error {
	switch u.state {
	case StateUpgrading:
		return ErrUpgradeInProgress
	case StateDraining:
		return ErrUpgraded
	case StateStopped:
		return ErrStopped
	}
	return nil
}

func (u *Upgrader) canAddNamedLocked(kind handoff.Kind, name string) error {
	if err := u.canAddLocked(); err != nil {
		return err
	}
	if err := u.awaitInventoryLocked(); err != nil {
		return err // an inherited entry of that name may be lost
	}
	if err := u.canAddLocked(); err != nil { // it may have waited
		return err
	}
	for _, e := range u.entries {
		if e.kind == kind && e.name == name {
			return fmt.Errorf("%w: %s %s", ErrNameInUse, kind, quote(name))
		}
	}
	return nil
}

func (u *Upgrader) listenConfig(lc *net.ListenConfig) *net.ListenConfig {
	if lc != nil {
		return lc
	}
	if u.opts.ListenConfig != nil {
		return u.opts.ListenConfig
	}
	return &net.ListenConfig{}
}

// newEntryLocked appends a new, not yet live entry for a socket this
// generation creates or adopts.
func (u *Upgrader) newEntryLocked(kind handoff.Kind, sa sockAddr, name string) *entry {
	e := &entry{kind: kind, network: sa.network, key: sa.key, name: name, fd: -1}
	if e.path = socketPath(sa.network, sa.key); e.path != "" && kind != handoff.KindConn {
		e.pathID, _ = statSocketFile(e.path)
		// molt removes only the files it bound itself; a socket added by
		// hand belongs to whoever made it (a systemd .socket unit, say).
		e.owns = name == ""
	}
	u.entries = append(u.entries, e)
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
// (see Upgrader.inherited). Entries claimed or closed meanwhile (their fd
// is -1) are passed over.
func (u *Upgrader) inheritedLocked(kind handoff.Kind, network, key, name string) *entry {
	for u.next < len(u.inherited) && u.inherited[u.next].fd < 0 {
		u.next++
	}
	if u.next == len(u.inherited) {
		return nil // nothing unclaimed has arrived (yet)
	}
	if e := u.inherited[u.next]; e.kind == kind && e.network == network && e.key == key && e.name == name {
		return e
	}
	if u.unclaimed == nil {
		u.unclaimed = make(map[inheritKey][]*entry)
		for _, e := range u.inherited[u.next:] {
			if e.fd >= 0 {
				u.indexLocked(e)
			}
		}
	}
	k := inheritKey{kind: kind, network: network, key: key, name: name}
	q := u.unclaimed[k]
	for len(q) > 0 && q[0].fd < 0 {
		q[0] = nil
		q = q[1:]
	}
	if len(q) == 0 {
		delete(u.unclaimed, k)
		return nil
	}
	u.unclaimed[k] = q
	return q[0]
}

// indexLocked adds an unclaimed inherited entry to the index.
func (u *Upgrader) indexLocked(e *entry) {
	k := e.inheritKey()
	u.unclaimed[k] = append(u.unclaimed[k], e)
}

// awaitInheritedLocked is inheritedLocked for a successor whose inventory
// may still be arriving: it waits until an entry with this key is in, or
// the whole inventory (then nil, and the error that ended the transfer if
// any). Entries arrive in inventory order, so the first one found is the
// first of the inventory. u.mu is released while it waits; after Stop it
// returns ErrStopped.
func (u *Upgrader) awaitInheritedLocked(kind handoff.Kind, network, key, name string) (*entry, error) {
	for {
		if u.state == StateStopped { // Stop closes the entries without u.mu
			return nil, ErrStopped
		}
		if e := u.inheritedLocked(kind, network, key, name); e != nil {
			return e, nil
		}
		if u.inventoryDone {
			return nil, u.inventoryErr
		}
		u.inventoryArrived.Wait()
	}
}

// awaitInventoryLocked waits until the whole inventory has arrived and
// returns the error that ended the transfer, if any. u.mu is released
// while it waits; after Stop it returns ErrStopped.
func (u *Upgrader) awaitInventoryLocked() error {
	for !u.inventoryDone {
		if u.state == StateStopped {
			return ErrStopped
		}
		u.inventoryArrived.Wait()
	}
	return u.inventoryErr
}

func (u *Upgrader) claimListenerLocked(e *entry) (net.Listener, error) {
	ln, err := claimLocked(u, e, net.FileListener, "listener")
	if err != nil {
		return nil, err
	}
	return u.adoptListenerLocked(e, ln)
}

func (u *Upgrader) claimPacketConnLocked(e *entry) (net.PacketConn, error) {
	pc, err := claimLocked(u, e, net.FilePacketConn, "packet socket")
	if err != nil {
		return nil, err
	}
	return u.adoptPacketConnLocked(e, pc)
}

func (u *Upgrader) claimConnLocked(e *entry) (net.Conn, error) {
	c, err := claimLocked(u, e, net.FileConn, "connection")
	if err != nil {
		return nil, err
	}
	return u.adoptConnLocked(e, c)
}

// claimLocked turns an inherited descriptor into the object open makes of
// it (net.FileListener and its siblings, which duplicate it close-on-exec
// and non-blocking) and closes the entry's own descriptor. os.NewFile does
// not mark the file as one it made non-blocking, so the Fd call inside
// net.File* cannot switch the socket, shared with the parent that still
// serves on it, to blocking mode. An entry that cannot be opened leaves
// the inventory. It runs with u.mu held throughout: releasing it for the
// system calls measured no faster, and would let a look-up, Ready or Stop
// meet an entry that is neither inherited nor live.
func claimLocked[T any](u *Upgrader, e *entry, open func(*os.File) (T, error), what string) (T, error) {
	// The file lives only for open's duration, and errors name e anyway:
	// a constant name saves two allocations per inherited socket.
	f := os.NewFile(uintptr(e.fd), "molt-inherited")
	e.fd = -1
	h, err := open(f)
	f.Close()
	if err != nil {
		u.removeLocked(e)
		return h, fmt.Errorf("molt: inherited %s is not a usable %s: %w", e.describe(), what, err)
	}
	return h, nil
}

func (u *Upgrader) adoptListenerLocked(e *entry, ln net.Listener) (net.Listener, error) {
	if ul, ok := ln.(*net.UnixListener); ok {
		// molt decides when the socket file goes, not Go's Close.
		ul.SetUnlinkOnClose(false)
	}
	l := &listener{Listener: ln, u: u, e: e}
	e.live, e.handle = ln.(liveHandle), l
	return l, nil
}

func (u *Upgrader) adoptPacketConnLocked(e *entry, pc net.PacketConn) (net.PacketConn, error) {
	c := &packetConn{PacketConn: pc, u: u, e: e}
	e.live, e.handle = pc.(liveHandle), c
	return c, nil
}

func (u *Upgrader) adoptConnLocked(e *entry, nc net.Conn) (net.Conn, error) {
	c := &conn{Conn: nc, u: u, e: e}
	e.live, e.handle = nc.(liveHandle), c
	return c, nil
}

// removeLocked takes e out of the inventory and reports whether it was there.
func (u *Upgrader) removeLocked(e *entry) bool {
	for i, x := range u.entries {
		if x == e {
			u.entries = append(u.entries[:i], u.entries[i+1:]...)
			return true
		}
	}
	return false
}

// release is the Close of a handle given out: it leaves the inventory, is
// closed, and its Unix socket file is removed if this generation serves it
// and no successor may.
func (u *Upgrader) release(e *entry) error {
	u.mu.Lock()
	u.keepForHandoffLocked(e)
	removed := u.removeLocked(e)
	unlink := removed && e.owns && (u.state == StateStarting || u.state == StateReady)
	u.mu.Unlock()
	err := e.live.Close()
	if unlink {
		u.removeSocketFile(e)
	}
	return err
}

// removeSocketFile removes e's Unix socket file if it is still the file e
// bound (a later process may have bound a new socket at the same path).
func (u *Upgrader) removeSocketFile(e *entry) {
	if e.path == "" {
		return
	}
	removed, err := removeSocketFileIfSame(e.path, e.pathID)
	switch {
	case err != nil:
		u.log.Warn("molt: cannot remove socket file", "path", e.path, "err", err)
	case removed:
		u.log.Debug("molt: removed socket file", "path", e.path)
	}
}

// removeStaleSocketUnlocked is removeStaleSocket for a caller holding
// u.mu: it releases the lock while it dials (which may take a second) and
// takes it again.
func (u *Upgrader) removeStaleSocketUnlocked(sa sockAddr) bool {
	u.mu.Unlock()
	defer u.mu.Lock()
	return u.removeStaleSocket(sa)
}

// removeStaleSocket removes a Unix socket file that no process serves (a
// crashed run left it behind) so that a new socket can be bound there. A
// file that is not a socket, or one a process still accepts on, is left.
func (u *Upgrader) removeStaleSocket(sa sockAddr) bool {
	path := socketPath(sa.network, sa.key)
	if path == "" || !isStaleSocket(sa.network, path) {
		return false
	}
	if err := os.Remove(path); err != nil {
		return false
	}
	u.log.Info("molt: removed stale socket file", "path", path)
	return true
}

func isAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }
