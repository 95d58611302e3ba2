package systemd_test

import (
	"fmt"
	"time"

	"github.com/moltgo/molt/systemd"
)

// Assignments print as they are sent; Status makes any text one line.
func ExampleAssignment() {
	fmt.Println(systemd.Ready)
	fmt.Println(systemd.MainPID(4242))
	fmt.Println(systemd.Status("upgrade failed:\nexit status 1"))
	fmt.Println(systemd.ExtendTimeout(90 * time.Second))
	// Output:
	// READY=1
	// MAINPID=4242
	// STATUS=upgrade failed: exit status 1
	// EXTEND_TIMEOUT_USEC=90000000
}
