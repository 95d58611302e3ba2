package main

import (
	"net"
	"sync"
)

// firstAcceptListener emits an "accept" event for its generation when its
// first connection is accepted: the driver reads the time from the trigger
// of an upgrade to that event as the successor's time to first accept,
// which is when it starts serving clients (under load a connection waits
// in the backlog at every moment).
type firstAcceptListener struct {
	net.Listener
	gen  uint64
	once sync.Once
}

// noteFirstAccept wraps ln; Accept, Close and Addr are ln's.
func noteFirstAccept(ln net.Listener, gen uint64) net.Listener {
	return &firstAcceptListener{Listener: ln, gen: gen}
}

func (l *firstAcceptListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.once.Do(func() { emit(serverEvent{Event: "accept", Gen: l.gen}) })
	}
	return c, err
}
