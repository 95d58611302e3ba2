package main

import (
	"net"
	"sync"
)

// firstAccept emits one "accept" event for its generation when the first
// connection is accepted on any of the listeners it wraps: the driver
// reads the time from the trigger of an upgrade to that event as the
// successor's time to first accept, which is when it starts serving
// clients (under load a connection waits in a backlog at every moment).
type firstAccept struct {
	gen  uint64
	once sync.Once
}

func newFirstAccept(gen uint64) *firstAccept { return &firstAccept{gen: gen} }

// wrap returns ln with Accept noting the first connection; Close and
// Addr are ln's.
func (f *firstAccept) wrap(ln net.Listener) net.Listener {
	return &firstAcceptListener{Listener: ln, f: f}
}

type firstAcceptListener struct {
	net.Listener
	f *firstAccept
}

func (l *firstAcceptListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.f.once.Do(func() { emit(serverEvent{Event: "accept", Gen: l.f.gen}) })
	}
	return c, err
}
