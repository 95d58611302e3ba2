//go:build unix && !linux

package molt

// processStart reports whether process pid runs, by kill(pid, 0), with a
// token of 0 (unknown): on these systems molt does not read the process's
// start time, so a PID that an unrelated process reused after an older
// generation exited counts as that generation still running (it refuses
// an upgrade it need not refuse; it never ends a process), and a zombie
// counts as running until it is reaped.
func processStart(pid int) (start uint64, running bool) { return 0, signalZero(pid) }
