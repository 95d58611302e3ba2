// Package proc keeps track of the processes a benchmark driver starts: on
// Linux it makes the driver a child subreaper, so every server generation
// is reaped by it even after its own parent has exited, and it can tell
// whether anything was left behind. It also describes the machine a
// benchmark ran on.
package proc
