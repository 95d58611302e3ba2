package molt

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// sockAddr is a requested address in the form the kernel sees it: the key
// under which the inventory stores a socket, and what to bind if it is new.
type sockAddr struct {
	network string // canonical network: "tcp" (dual stack), "tcp4", "tcp6", "udp"…, "unix"…
	key     string // canonical address: "[::]:8080", "127.0.0.1:8080", "/abs/path.sock", "@abstract"
	bind    string // what to pass to ListenConfig for a new socket
}

func (a sockAddr) String() string { return a.network + " " + a.key }

// canonicalAddr resolves a Listen/ListenPacket address once (host names
// included) into the form the kernel would bind, so that ":8080",
// "0.0.0.0:8080" and "[::]:8080" with network "tcp" are one socket. It may
// do a DNS look-up, so callers must not hold locks.
func canonicalAddr(network, addr string, packet bool) (sockAddr, error) {
	if sa, ok := canonicalLiteral(network, addr, packet); ok {
		return sa, nil
	}
	return canonicalResolved(network, addr, packet)
}

// canonicalResolved is canonicalAddr through the resolver.
func canonicalResolved(network, addr string, packet bool) (sockAddr, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
		if packet {
			break
		}
		ta, err := net.ResolveTCPAddr(network, addr)
		if err != nil {
			return sockAddr{}, fmt.Errorf("molt: resolve %s %q: %w", network, addr, err)
		}
		return canonicalIP(network, ta.IP, ta.Port, ta.Zone), nil
	case "udp", "udp4", "udp6":
		if !packet {
			break
		}
		ua, err := net.ResolveUDPAddr(network, addr)
		if err != nil {
			return sockAddr{}, fmt.Errorf("molt: resolve %s %q: %w", network, addr, err)
		}
		return canonicalIP(network, ua.IP, ua.Port, ua.Zone), nil
	case "unix", "unixpacket", "unixgram":
		if packet != (network == "unixgram") {
			break
		}
		return canonicalUnix(network, addr)
	}
	if packet {
		return sockAddr{}, fmt.Errorf("molt: ListenPacket: unsupported network %q (want udp, udp4, udp6 or unixgram)", network)
	}
	return sockAddr{}, fmt.Errorf("molt: Listen: unsupported network %q (want tcp, tcp4, tcp6, unix or unixpacket)", network)
}

// canonicalLiteral is canonicalAddr's fast path for the common case, an IP
// literal with a numeric port ("127.0.0.1:8080", "[::1]:0"): no resolver,
// in less than half the time (measured 310 -> 140 ns, 8 -> 3 allocations).
// It declines (ok false) whatever the resolver must judge: names, empty
// hosts, service names, IPv4-mapped IPv6, and an address of the other
// family than network asks for.
func canonicalLiteral(network, addr string, packet bool) (sa sockAddr, ok bool) {
	switch network {
	case "tcp", "tcp4", "tcp6":
		ok = !packet
	case "udp", "udp4", "udp6":
		ok = packet
	}
	if !ok {
		return sockAddr{}, false
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Addr().Is4In6() {
		return sockAddr{}, false
	}
	ip := ap.Addr()
	switch network[3:] {
	case "4":
		ok = ip.Is4()
	case "6":
		ok = ip.Is6()
	}
	if !ok {
		return sockAddr{}, false
	}
	return canonicalIP(network, net.IP(ip.AsSlice()), int(ap.Port()), ip.Zone()), true
}

// canonicalIP follows Go's own choice of socket family: a wildcard address
// under "tcp"/"udp" is one dual-stack socket; a specific address is bound
// in its own family, so "tcp" 127.0.0.1 and "tcp4" 127.0.0.1 are the same.
func canonicalIP(network string, ip net.IP, port int, zone string) sockAddr {
	base, suffix := network[:3], network[3:] // "tcp" / "udp", then "", "4" or "6"
	p := strconv.Itoa(port)
	if ip == nil || ip.IsUnspecified() {
		switch suffix {
		case "4":
			return sockAddr{network: network, key: "0.0.0.0:" + p, bind: "0.0.0.0:" + p}
		case "6":
			return sockAddr{network: network, key: "[::]:" + p, bind: "[::]:" + p}
		}
		return sockAddr{network: network, key: "[::]:" + p, bind: ":" + p}
	}
	if ip4 := ip.To4(); ip4 != nil {
		hp := net.JoinHostPort(ip4.String(), p)
		return sockAddr{network: base + "4", key: hp, bind: hp}
	}
	host := ip.String()
	if zone != "" {
		host += "%" + zone
	}
	hp := net.JoinHostPort(host, p)
	return sockAddr{network: base + "6", key: hp, bind: hp}
}

// canonicalUnix makes a socket path absolute and clean; abstract names
// ("@name", Linux) are kept as they are.
func canonicalUnix(network, addr string) (sockAddr, error) {
	if addr == "" {
		return sockAddr{}, fmt.Errorf("molt: %s: empty socket path (unnamed sockets cannot be handed over)", network)
	}
	if strings.HasPrefix(addr, "@") {
		return sockAddr{network: network, key: addr, bind: addr}, nil
	}
	abs, err := filepath.Abs(addr)
	if err != nil {
		return sockAddr{}, fmt.Errorf("molt: %s %q: %w", network, addr, err)
	}
	return sockAddr{network: network, key: abs, bind: abs}, nil
}

// socketPath returns the file system path of a Unix socket address, or ""
// for IP and abstract sockets.
func socketPath(network, key string) string {
	if !strings.HasPrefix(network, "unix") || strings.HasPrefix(key, "@") {
		return ""
	}
	return key
}
