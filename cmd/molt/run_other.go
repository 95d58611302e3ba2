//go:build !unix

package main

import (
	"fmt"
	"io"
)

func runSupervisor(_ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "molt: run is not supported on this platform")
	return exitFailed
}
