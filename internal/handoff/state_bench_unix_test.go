//go:build unix

package handoff

import (
	"fmt"
	"testing"
)

// BenchmarkState measures a state's way through a socketpair: SendState
// in one goroutine, RecvState into one new buffer in another. The bytes
// per second say what a state of a given size adds to an upgrade.
func BenchmarkState(b *testing.B) {
	for _, size := range []int{1 << 10, 1 << 20, 16 << 20, MaxState} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			parent, child := pipePair(b)
			data := make([]byte, size)
			b.SetBytes(int64(size))
			for b.Loop() {
				done := make(chan error, 1)
				go func() { done <- parent.SendState("bench/v1", data) }()
				_, got, err := child.RecvState()
				if err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				if len(got) != size {
					b.Fatalf("received %d bytes, want %d", len(got), size)
				}
			}
		})
	}
}
