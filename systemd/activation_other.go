//go:build !unix

package systemd

import (
	"net"
	"os"
)

func adoptPassed([]string) ([]passedFD, error) { return nil, ErrNotSupported }

func openListener(*os.File, string) (net.Listener, error) { return nil, ErrNotSupported }

func openPacketConn(*os.File, string) (net.PacketConn, error) { return nil, ErrNotSupported }

func sameSocket(int, int) bool { return false }
