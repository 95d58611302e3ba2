//go:build !unix

package main

import "errors"

// countFDs is not available where molt does not run; main never starts a
// server there.
func countFDs() (total, conns int, own []string, err error) {
	return 0, 0, nil, errors.New("soak: counting descriptors is not supported on this system")
}

func readRSS() (int64, bool) { return 0, false }
