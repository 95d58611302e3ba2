//go:build unix

package supervise

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// envShim marks a process started as the shim: its argv[1] is the
// program's path and argv[2:] the program's argv.
const envShim = "MOLT_RUN_EXEC"

// ExecShim returns at once unless this process was started by a
// Supervisor as the shim of an instance. Then it sets LISTEN_PID to its
// own process ID and executes the program in its place (the ID stays the
// same, so LISTEN_PID names the program); if that fails it writes why to
// standard error and exits with status 127, as a shell does. Call it
// first in the main function of every binary that runs a Supervisor (and
// in TestMain of its tests).
func ExecShim() {
	if os.Getenv(envShim) != "1" {
		return
	}
	os.Unsetenv(envShim)
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "molt run: shim started without a program")
		os.Exit(127)
	}
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	err := syscall.Exec(os.Args[1], os.Args[2:], os.Environ())
	fmt.Fprintf(os.Stderr, "molt run: exec %s: %v\n", os.Args[1], err)
	os.Exit(127)
}
