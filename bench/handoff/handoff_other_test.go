//go:build !linux

package handoff

import "testing"

// The driver needs Linux's child subreaper to wait for every generation of a
// chain, which outlives its parent; see the package documentation.
const onlyLinux = "the hand-off benchmark runs on Linux only"

func TestHandoff(t *testing.T) { t.Skip(onlyLinux) }

func BenchmarkHandoff(b *testing.B) { b.Skip(onlyLinux) }
