//go:build unix

package main

import (
	"net"
	"os"
	"slices"
	"syscall"
	"testing"
)

// fdOf returns the descriptor of c, which must stay referenced.
func fdOf(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

func TestClassifyFD(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()

	for _, tc := range []struct {
		name       string
		fd         int
		open, conn bool
	}{
		{"listener", fdOf(t, ln.(*net.TCPListener)), true, false},
		{"connection", fdOf(t, c.(*net.TCPConn)), true, true},
		{"pipe", int(r.Fd()), true, false},
		{"closed", 1 << 20, false, false},
	} {
		open, conn, desc := classifyFD(tc.fd)
		if open != tc.open || conn != tc.conn {
			t.Errorf("%s: classifyFD = open %v, connection %v (%q); want %v, %v", tc.name, open, conn, desc, tc.open, tc.conn)
		}
	}

	total, conns, own, err := countFDs()
	if err != nil {
		t.Fatal(err)
	}
	if conns < 1 || total != conns+len(own) || !slices.ContainsFunc(own, func(s string) bool { return withoutNumber(s) == "tcp listener" }) {
		t.Errorf("countFDs = %d total, %d connections, own %q", total, conns, own)
	}
}
