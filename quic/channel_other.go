//go:build !unix

package quic

import (
	"log/slog"
	"net"
	"net/netip"

	"github.com/moltgo/molt"
)

// Without Unix socket pairs there is no channel between generations, and
// molt itself does not run: ListenPacket returns molt.ErrNotSupported.

func supported() error { return molt.ErrNotSupported }

func dupUDP(net.PacketConn) (*net.UDPConn, error) { return nil, molt.ErrNotSupported }

type inbox struct{}

func newInbox(*molt.Upgrader, string, uint32) (*inbox, error) { return nil, molt.ErrNotSupported }
func (*inbox) read(c *PacketConn)                             { c.wg.Done() }
func (*inbox) close()                                         {}

type olderGenerations struct{ log func() *slog.Logger }

func claimOlder(*molt.Upgrader, string, uint32, func() *slog.Logger) (*olderGenerations, error) {
	return nil, molt.ErrNotSupported
}

type forwardResult int

const (
	notForwarded forwardResult = iota
	forwarded
	dropped
)

func (*olderGenerations) forward(uint32, []byte, netip.AddrPort) forwardResult { return notForwarded }
func (*olderGenerations) generations() []uint32                                { return nil }
func (*olderGenerations) close()                                               {}
