//go:build unix && !linux

package main

// listFDs scans: /dev/fd is not complete everywhere (FreeBSD without
// fdescfs shows 0 to 2 only).
func listFDs() ([]int, error) { return scanFDs() }

// readRSS: there is no /proc/self/status here; the report says "n/a".
func readRSS() (int64, bool) { return 0, false }

// describeFile: no portable way to name what a descriptor refers to.
func describeFile(int) string { return "file" }
