//go:build unix

package handoff

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkInventory measures what molt adds to an upgrade beyond starting
// the process: one HELLO and the inventory, n entries with their
// descriptors, sent and received over a socketpair. Run with -count for
// benchstat; the DESIGN targets are <= 1 ms at 10 and <= 20 ms at 10,000.
func BenchmarkInventory(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			parent, child := pipePair(b)
			fd := tempFD(b, "entry")
			es := make([]Entry, n)
			fds := make([]int, n)
			for i := range es {
				es[i] = Entry{Kind: KindListener, Network: "tcp", Addr: fmt.Sprintf("127.0.0.1:%d", 10000+i)}
				fds[i] = fd // the kernel makes a new descriptor for each in the receiver
			}
			b.ResetTimer()
			for range b.N {
				done := make(chan error, 1)
				go func() {
					if err := parent.SendHello(Hello{Generation: 2, ParentPID: 1, Entries: n}); err != nil {
						done <- err
						return
					}
					done <- parent.SendInventory(es, fds)
				}()
				h, err := child.RecvHello()
				if err != nil {
					b.Fatal(err)
				}
				_, got, err := child.RecvInventory(h.Entries)
				if err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				for _, f := range got {
					unix.Close(f)
				}
				b.StartTimer()
			}
		})
	}
}
