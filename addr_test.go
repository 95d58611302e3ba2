package molt

import (
	"path/filepath"
	"testing"
)

func TestCanonicalAddr(t *testing.T) {
	abs, _ := filepath.Abs("rel.sock")
	tests := []struct {
		network, addr string
		packet        bool
		want          string // canonical network and key
	}{
		{"tcp", ":8080", false, "tcp [::]:8080"},
		{"tcp", "0.0.0.0:8080", false, "tcp [::]:8080"},
		{"tcp", "[::]:8080", false, "tcp [::]:8080"},
		{"tcp4", ":8080", false, "tcp4 0.0.0.0:8080"},
		{"tcp6", ":8080", false, "tcp6 [::]:8080"},
		{"tcp", "127.0.0.1:80", false, "tcp4 127.0.0.1:80"},
		{"tcp4", "127.0.0.1:80", false, "tcp4 127.0.0.1:80"},
		{"tcp", "[::1]:80", false, "tcp6 [::1]:80"},
		{"tcp", "[::ffff:127.0.0.1]:80", false, "tcp4 127.0.0.1:80"},
		{"tcp", "localhost:0", false, "tcp4 127.0.0.1:0"},
		{"udp", ":53", true, "udp [::]:53"},
		{"udp4", "127.0.0.1:53", true, "udp4 127.0.0.1:53"},
		{"unix", "/run/x/../s.sock", false, "unix /run/s.sock"},
		{"unix", "rel.sock", false, "unix " + abs},
		{"unixpacket", "@abstract", false, "unixpacket @abstract"},
		{"unixgram", "/run/g.sock", true, "unixgram /run/g.sock"},
	}
	for _, tc := range tests {
		got, err := canonicalAddr(tc.network, tc.addr, tc.packet)
		if err != nil {
			t.Errorf("canonicalAddr(%q, %q) error: %v", tc.network, tc.addr, err)
			continue
		}
		if got.String() != tc.want {
			t.Errorf("canonicalAddr(%q, %q) = %q, want %q", tc.network, tc.addr, got, tc.want)
		}
	}
}

// TestCanonicalLiteral checks the fast path against the resolver: where it
// answers, it answers as the resolver does, and it answers for the plain
// literals a service normally listens on.
func TestCanonicalLiteral(t *testing.T) {
	addrs := []string{
		"127.0.0.1:80", "127.0.0.1:0", "0.0.0.0:8080", "10.1.2.3:65535", "[::1]:80", "[::]:0",
		"[fe80::1%lo]:80", "[::ffff:127.0.0.1]:80", "[::ffff:0.0.0.0]:80", ":8080", "localhost:80",
		"127.0.0.1:http", "127.0.0.1:99999", "[::1]", "1.2.3.4", "[2001:db8::1]:443",
	}
	networks := []string{"tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "unix"}
	for _, network := range networks {
		for _, packet := range []bool{false, true} {
			for _, addr := range addrs {
				fast, ok := canonicalLiteral(network, addr, packet)
				if !ok {
					continue
				}
				slow, err := canonicalResolved(network, addr, packet)
				if err != nil || fast != slow {
					t.Errorf("%s %q packet=%t: fast path %+v, resolver %+v (%v)", network, addr, packet, fast, slow, err)
				}
			}
		}
	}
	for _, tc := range []struct{ network, addr string }{{"tcp", "127.0.0.1:0"}, {"tcp4", "10.1.2.3:80"}, {"tcp", "[::1]:80"}, {"tcp6", "[::]:0"}} {
		if _, ok := canonicalLiteral(tc.network, tc.addr, false); !ok {
			t.Errorf("fast path declined %s %q", tc.network, tc.addr)
		}
	}
}

func TestCanonicalAddrErrors(t *testing.T) {
	tests := []struct {
		network, addr string
		packet        bool
	}{
		{"sctp", ":1", false},
		{"udp", ":1", false},      // packet network for Listen
		{"tcp", ":1", true},       // stream network for ListenPacket
		{"unixgram", "/x", false}, // datagram Unix for Listen
		{"unix", "", false},
		{"tcp", "no-port", false},
	}
	for _, tc := range tests {
		if got, err := canonicalAddr(tc.network, tc.addr, tc.packet); err == nil {
			t.Errorf("canonicalAddr(%q, %q, packet=%t) = %v, want an error", tc.network, tc.addr, tc.packet, got)
		}
	}
}

func TestSuccessorEnv(t *testing.T) {
	in := []string{"PATH=/bin", envHandoffFD + "=3", "LISTEN_FDS=2", "LISTEN_PID=1", "LISTEN_FDNAMES=a:b", "HOME=/root"}
	got := successorEnv(in)
	want := []string{"PATH=/bin", "HOME=/root"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("successorEnv = %q, want %q", got, want)
	}
}
