package supervise

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/moltgo/molt/systemd"
	"golang.org/x/sys/unix"
)

// sock is one listening socket the supervisor holds for its instances.
type sock struct {
	name, network, addr string
	f                   *os.File
	fd                  int
	unlink              bool // a socket file this supervisor bound: removed at Close
	id                  [2]uint64
}

// openSockets returns systemd's sockets (if activated) and then new ones
// for opts.Sockets. The descriptors are blocking, as systemd passes them
// by default (NonBlocking=no); the supervisor never accepts on them.
func openSockets(opts *Options) ([]*sock, error) {
	var out []*sock
	fail := func(err error) ([]*sock, error) {
		closeSockets(out)
		return nil, err
	}
	if opts.Activated {
		passed, err := systemd.PassedFDs()
		if err != nil {
			return nil, fmt.Errorf("supervise: socket activation: %w", err)
		}
		for _, p := range passed {
			network, addr := describeFD(p.FD)
			out = append(out, &sock{name: p.Name, network: network, addr: addr,
				f: os.NewFile(uintptr(p.FD), p.Name), fd: p.FD})
		}
	}
	for _, s := range opts.Sockets {
		sk, err := listen(s)
		if err != nil {
			return fail(err)
		}
		out = append(out, sk)
	}
	return out, nil
}

func listen(s Socket) (*sock, error) {
	if s.Network == "unix" {
		if err := removeStale(s.Address); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen(s.Network, s.Address)
	if err != nil {
		return nil, fmt.Errorf("supervise: --listen %s: %w", s, err)
	}
	var f *os.File
	switch l := ln.(type) {
	case *net.TCPListener:
		f, err = l.File()
	case *net.UnixListener:
		l.SetUnlinkOnClose(false)
		f, err = l.File()
	}
	ln.Close()
	if err != nil {
		return nil, fmt.Errorf("supervise: --listen %s: %w", s, err)
	}
	fd, err := rawFD(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("supervise: --listen %s: %w", s, err)
	}
	unix.SetNonblock(fd, false)
	network, addr := describeFD(fd)
	if s.Network != "unix" {
		network = s.Network
	}
	sk := &sock{name: s.Name, network: network, addr: addr, f: f, fd: fd, unlink: s.Network == "unix"}
	if sk.unlink {
		var st unix.Stat_t
		if unix.Stat(s.Address, &st) == nil {
			sk.id = [2]uint64{st.Dev, st.Ino}
		}
	}
	return sk, nil
}

// describeFD names a socket's network and local address.
func describeFD(fd int) (string, string) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return "unknown", ""
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return "tcp", (&net.TCPAddr{IP: a.Addr[:], Port: a.Port}).String()
	case *unix.SockaddrInet6:
		return "tcp", (&net.TCPAddr{IP: a.Addr[:], Port: a.Port}).String()
	case *unix.SockaddrUnix:
		return "unix", a.Name
	}
	return "unknown", ""
}

// removeStale removes a socket file nothing serves.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket {
		return nil // absent, or not a socket: the bind says what is wrong
	}
	var d net.Dialer
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("supervise: %s is served by another process", path)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		os.Remove(path)
	}
	return nil
}

func closeSockets(socks []*sock) {
	for _, sk := range socks {
		if sk.unlink {
			var st unix.Stat_t
			if unix.Stat(sk.addr, &st) == nil && [2]uint64{st.Dev, st.Ino} == sk.id {
				os.Remove(sk.addr)
			}
		}
		sk.f.Close()
	}
}
