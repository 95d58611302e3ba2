//go:build !linux && !darwin && !dragonfly && !freebsd && !netbsd && !openbsd

package main

import "os"

// isTerminal reports false: without a terminal check molt shows no
// progress line.
func isTerminal(*os.File) bool { return false }
