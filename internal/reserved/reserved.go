// Package reserved lets molt's own packages (control, systemd) add
// inventory entries under the name prefixes molt reserves ("molt/",
// "systemd/"), which the Upgrader's exported Add methods refuse. The root
// package sets these functions in its init; their first argument is a
// *molt.Upgrader.
package reserved

import (
	"net"
	"os"
)

// The Add methods of *molt.Upgrader, without the reserved-name check.
var (
	AddListener   func(u any, name string, ln net.Listener) (net.Listener, error)
	AddPacketConn func(u any, name string, pc net.PacketConn) (net.PacketConn, error)
	AddFile       func(u any, name string, f *os.File) error
)
