package quic

import "golang.org/x/sys/unix"

func seqpacketPair() ([2]int, error) {
	return unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
}

// msgNoSignal keeps a send to a generation that is gone from raising
// SIGPIPE (the Go runtime ignores it, but a program built as a C library,
// or one that asked for SIGPIPE, would not).
const msgNoSignal = unix.MSG_NOSIGNAL
