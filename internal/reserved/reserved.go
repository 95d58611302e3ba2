// Package reserved lets molt's own packages (control, systemd, quic) add
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

// OnYield registers two hooks on a *molt.Upgrader for a package that reads
// a shared packet socket itself: yield runs just before this generation
// sends the ACK to a successor (which starts reading once its Ready has
// returned), and must return only once this generation reads the socket
// no more; resume runs when this generation serves again after it
// yielded (the upgrade failed after that point, or a probation rolled
// back). Both run in the goroutine of Upgrade and must return quickly.
// The returned function removes the hooks.
var OnYield func(u any, yield, resume func()) (remove func())
