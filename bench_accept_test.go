//go:build unix

package molt_test

import (
	"net"
	"testing"

	"github.com/moltgo/molt"
)

// BenchmarkAccept compares a molt listener's Accept with a plain
// net.Listen's: each iteration dials, accepts and closes one loopback
// connection. The DESIGN target is a ratio of at least 0.99.
func BenchmarkAccept(b *testing.B) {
	run := func(b *testing.B, ln net.Listener) {
		addr := ln.Addr().String()
		for range b.N {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			s, err := ln.Accept()
			if err != nil {
				b.Fatal(err)
			}
			s.Close()
			c.Close()
		}
	}
	b.Run("plain", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		run(b, ln)
	})
	b.Run("molt", func(b *testing.B) {
		u, err := molt.New(molt.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer u.Stop()
		ln, err := u.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		run(b, ln)
	})
}
