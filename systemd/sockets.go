package systemd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/reserved"
)

// Listen returns the listening socket named name, from the first place
// that has one:
//
//  1. the Upgrader's inventory: the socket the previous generation served
//     under that name (successors never see LISTEN_FDS; their sockets
//     arrive through molt's hand-off);
//  2. the descriptors systemd passed: a .socket unit's socket with
//     FileDescriptorName=name, or the file descriptor store handing back
//     what a previous start stored under name;
//  3. a new socket bound to network and addr. With [Options.FDStore] it is
//     kept under name and stored at Ready; otherwise it is made by the
//     Upgrader's Listen, which carries it to successors by address.
//
// A socket found in 1 or 2 must be a listening socket bound to addr (as the
// kernel binds it: ":8080" matches "[::]:8080"), or Listen fails with
// [ErrAddrMismatch] — except that with [Options.FDStore] a stored socket
// whose address changed is dropped and replaced by a new one.
//
// Sockets from 2 and 3 enter the inventory under "systemd/"+name, so that
// the next generation finds them in 1. The returned listener is then the
// Upgrader's: its Close releases the entry, and idle connections can be
// handed over to the successor ([molt.HandOver]). A Unix socket with a
// path is the exception: its file belongs to systemd (or must outlive
// restarts), which the Upgrader's listeners cannot express, so it is
// carried as a file and the caller gets a listener of its own, without
// connection hand-over. Closing a listener never closes a socket systemd
// holds.
//
// Claim every socket before Ready: Ready closes the passed ones nobody
// claimed. A name can be claimed once per process ([ErrClaimed]); invalid
// names fail with [ErrInvalidMessage].
func (s *Service) Listen(name, network, addr string) (net.Listener, error) {
	if network == "" || addr == "" {
		return nil, fmt.Errorf("systemd: Listen %q: network and address are required (use Listener to take a passed socket as it is)", name)
	}
	return s.listener(name, network, addr)
}

// Listener returns the listening socket named name, as [Service.Listen]
// does, but never creates one: it fails with [ErrNotFound] if neither the
// previous generation nor systemd passed a socket of that name, and does
// not check its address.
func (s *Service) Listener(name string) (net.Listener, error) {
	return s.listener(name, "", "")
}

// PacketConn returns the datagram socket named name — handed over by the
// previous generation or passed by systemd (ListenDatagram= with
// FileDescriptorName=) — under the rules of [Service.Listener].
func (s *Service) PacketConn(name string) (net.PacketConn, error) {
	if err := checkFDName(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.claimableLocked(name); err != nil {
		return nil, err
	}
	key := inventoryPrefix + name
	if pc, err := s.upg.PacketConn(key); !errors.Is(err, molt.ErrNotFound) {
		if err != nil {
			return nil, err
		}
		s.claimLocked(name, pc.(syscall.Conn), false)
		return pc, nil
	}
	if f, err := s.upg.File(key); !errors.Is(err, molt.ErrNotFound) {
		if err != nil {
			return nil, err
		}
		pc, err := openPacketConn(f, name)
		if err != nil {
			return nil, err
		}
		s.claimLocked(name, f, false)
		return pc, nil
	}
	f, err := s.takePassedLocked(name)
	if err != nil {
		return nil, err
	}
	pc, err := openPacketConn(f, name)
	if err != nil {
		f.Close()
		return nil, err
	}
	return keepLocked(s, name, pc, pc.LocalAddr(), f, false, s.addPacketConn)
}

func (s *Service) listener(name, network, addr string) (net.Listener, error) {
	if err := checkFDName(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.claimableLocked(name); err != nil {
		return nil, err
	}
	check := func(ln net.Listener) error {
		if addr == "" {
			return nil
		}
		if err := checkAddr(ln.Addr(), network, addr); err != nil {
			return fmt.Errorf("systemd: socket %q: %w", name, err)
		}
		return nil
	}
	key := inventoryPrefix + name

	// 1. Handed over by the previous generation: a listener, or a Unix
	// socket with a path carried as a file. It stays the Upgrader's even
	// if it does not fit.
	if ln, err := s.upg.Listener(key); !errors.Is(err, molt.ErrNotFound) {
		if err == nil {
			err = check(ln)
		}
		if err != nil {
			return nil, err
		}
		s.claimLocked(name, ln.(syscall.Conn), false)
		return ln, nil
	}
	if f, err := s.upg.File(key); !errors.Is(err, molt.ErrNotFound) {
		if err != nil {
			return nil, err
		}
		ln, err := openListener(f, name)
		if err != nil {
			return nil, err
		}
		if err := check(ln); err != nil {
			ln.Close()
			return nil, err
		}
		s.claimLocked(name, f, false)
		return ln, nil
	}

	// 2. Passed by systemd.
	f, err := s.takePassedLocked(name)
	switch {
	case errors.Is(err, ErrNotFound) && addr != "":
		return s.createLocked(name, network, addr)
	case err != nil:
		return nil, err
	}
	ln, err := openListener(f, name)
	if err == nil {
		if err = check(ln); err != nil {
			ln.Close()
			if s.opts.FDStore {
				// A stored socket of an earlier configuration: replace it
				// (the new one is stored under the name at Ready, after
				// the old one is removed).
				f.Close()
				s.log.Info("systemd: dropping a stored socket bound elsewhere", "name", name, "err", err)
				return s.createLocked(name, network, addr)
			}
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return keepLocked(s, name, ln, ln.Addr(), f, false, s.addListener)
}

// keepLocked puts a socket from systemd (h, local address local), or a
// new one, into the inventory under name, with add (the Upgrader's
// AddListener or AddPacketConn), and records the claim. f is a descriptor
// of the same socket, which is kept for a Unix socket with a path (it
// travels as a file, so that no generation removes systemd's socket file)
// and closed otherwise; the caller gives up both. s.mu is held.
func keepLocked[T io.Closer](s *Service, name string, h T, local net.Addr, f *os.File, fresh bool,
	add func(string, T) (T, error)) (T, error) {
	var zero T
	key := inventoryPrefix + name
	if isPathAddr(local) {
		if ul, ok := any(h).(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false) // the file outlives this process
		}
		if err := reserved.AddFile(s.upg, key, f); err != nil {
			h.Close()
			f.Close()
			return zero, fmt.Errorf("systemd: socket %q: %w", name, err)
		}
		s.claimLocked(name, f, fresh)
		return h, nil
	}
	f.Close()
	kept, err := add(key, h)
	if err != nil {
		h.Close()
		return zero, fmt.Errorf("systemd: socket %q: %w", name, err)
	}
	s.claimLocked(name, any(kept).(syscall.Conn), fresh)
	return kept, nil
}

// claimLocked records that this process claimed name; c lends the
// socket's descriptor to the file descriptor store. s.mu is held.
func (s *Service) claimLocked(name string, c syscall.Conn, fresh bool) {
	s.claimed[name] = claim{conn: c, fresh: fresh}
}

// claimableLocked reports whether name may be claimed now. s.mu is held.
func (s *Service) claimableLocked(name string) error {
	if s.closed {
		return errors.New("systemd: Service is closed")
	}
	if _, ok := s.claimed[name]; ok {
		return fmt.Errorf("%w: %q", ErrClaimed, name)
	}
	return nil
}

// takePassedLocked takes the descriptor systemd passed under name out of
// the unclaimed ones. systemd passes one socket twice when a .socket unit
// and the file descriptor store both hold it under the name: the copies
// are closed. Two different sockets under one name cannot be told apart,
// and are an error. s.mu is held.
func (s *Service) takePassedLocked(name string) (*os.File, error) {
	fd := -1
	var dups []int
	for _, p := range s.passed {
		switch {
		case p.name != name:
		case fd < 0:
			fd = p.fd
		case sameSocket(fd, p.fd):
			dups = append(dups, p.fd)
		default:
			return nil, fmt.Errorf("%w: LISTEN_FDNAMES names two different sockets %q; give each its own FileDescriptorName=",
				ErrInvalidEnv, name)
		}
	}
	if fd < 0 {
		return nil, fmt.Errorf("%w: %q (neither handed over by a previous generation nor passed by systemd)", ErrNotFound, name)
	}
	kept := s.passed[:0]
	for _, p := range s.passed {
		if p.name != name {
			kept = append(kept, p)
		}
	}
	clear(s.passed[len(kept):])
	s.passed = kept
	for _, d := range dups {
		closeFD(d)
	}
	return os.NewFile(uintptr(fd), "systemd:"+name), nil
}

// createLocked makes a new listening socket for name. With the file
// descriptor store, it enters the inventory under name and is stored at
// Ready; otherwise the Upgrader's Listen makes it, keyed by its address.
// s.mu is held.
func (s *Service) createLocked(name, network, addr string) (net.Listener, error) {
	if !s.opts.FDStore {
		ln, err := s.upg.Listen(network, addr)
		if err != nil {
			return nil, err
		}
		s.claimLocked(name, nil, false)
		return ln, nil
	}
	ln, err := listenFresh(network, addr)
	if err != nil {
		return nil, fmt.Errorf("systemd: socket %q: %w", name, err)
	}
	fd, err := dupConn(ln.(syscall.Conn))
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("systemd: socket %q: %w", name, err)
	}
	return keepLocked(s, name, ln, ln.Addr(), os.NewFile(uintptr(fd), "systemd:"+name), true, s.addListener)
}

// isPathAddr reports whether a is a Unix socket address with a file.
func isPathAddr(a net.Addr) bool {
	ua, ok := a.(*net.UnixAddr)
	return ok && ua.Name != "" && !strings.HasPrefix(ua.Name, "@")
}

// listenFresh binds a new listening socket that outlives this process in
// the file descriptor store: a Unix socket file is therefore never removed
// on close, and one left behind by an earlier run that nothing serves is
// replaced.
func listenFresh(network, addr string) (net.Listener, error) {
	ln, err := net.Listen(network, addr)
	if err != nil && errors.Is(err, syscall.EADDRINUSE) && staleSocketFile(network, addr) {
		if rerr := os.Remove(addr); rerr == nil {
			ln, err = net.Listen(network, addr)
		}
	}
	if err != nil {
		return nil, err
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	return ln, nil
}

// staleSocketFile reports whether addr is a Unix socket file that nothing
// accepts on (connecting is refused).
func staleSocketFile(network, addr string) bool {
	if !strings.HasPrefix(network, "unix") || strings.HasPrefix(addr, "@") {
		return false
	}
	fi, err := os.Lstat(addr)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return false
	}
	c, err := net.DialTimeout(network, addr, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// checkAddr reports whether got is the address network/addr names, as the
// kernel binds it: a wildcard host matches either wildcard (":8080",
// "0.0.0.0:8080" and "[::]:8080"), a port of 0 matches any port, host names
// are resolved, and Unix paths are compared made absolute.
func checkAddr(got net.Addr, network, addr string) error {
	mismatch := func() error {
		return fmt.Errorf("%w: bound to %s %s, want %s %s", ErrAddrMismatch, got.Network(), got, network, addr)
	}
	var (
		wantIP, gotIP     net.IP
		wantPort, gotPort int
	)
	switch network {
	case "tcp", "tcp4", "tcp6":
		ta, err := net.ResolveTCPAddr(network, addr)
		if err != nil {
			return fmt.Errorf("systemd: %w", err)
		}
		g, ok := got.(*net.TCPAddr)
		if !ok {
			return mismatch()
		}
		wantIP, wantPort, gotIP, gotPort = ta.IP, ta.Port, g.IP, g.Port
	case "udp", "udp4", "udp6":
		ua, err := net.ResolveUDPAddr(network, addr)
		if err != nil {
			return fmt.Errorf("systemd: %w", err)
		}
		g, ok := got.(*net.UDPAddr)
		if !ok {
			return mismatch()
		}
		wantIP, wantPort, gotIP, gotPort = ua.IP, ua.Port, g.IP, g.Port
	case "unix", "unixpacket", "unixgram":
		g, ok := got.(*net.UnixAddr)
		if !ok || g.Net != network {
			return mismatch()
		}
		want, have := addr, g.Name
		if !strings.HasPrefix(addr, "@") {
			abs, err := filepath.Abs(addr)
			if err != nil {
				return fmt.Errorf("systemd: %s %q: %w", network, addr, err)
			}
			want, have = abs, filepath.Clean(have)
		}
		if want != have {
			return mismatch()
		}
		return nil
	default:
		return fmt.Errorf("systemd: unsupported network %q", network)
	}
	if wantPort != 0 && wantPort != gotPort {
		return mismatch()
	}
	if wantIP == nil || wantIP.IsUnspecified() {
		if gotIP != nil && !gotIP.IsUnspecified() {
			return mismatch()
		}
		return nil
	}
	if !wantIP.Equal(gotIP) {
		return mismatch()
	}
	return nil
}

// addListener and addPacketConn add under this package's reserved prefix,
// which the Upgrader's own Add methods refuse.
func (s *Service) addListener(name string, ln net.Listener) (net.Listener, error) {
	return reserved.AddListener(s.upg, name, ln)
}

func (s *Service) addPacketConn(name string, pc net.PacketConn) (net.PacketConn, error) {
	return reserved.AddPacketConn(s.upg, name, pc)
}
