package molt

import "sync"

// Yield hooks: how a package that reads a shared packet socket itself
// (package quic) learns when this generation gives the socket's reading to
// a successor and when it takes it back. A listener needs nothing of the
// kind, since the kernel queues connections for whoever accepts; a UDP
// socket read by two processes splits its datagrams between them, so
// exactly one generation may read it at a time. yield runs just before the
// ACK (the successor starts reading once its Ready has returned), resume
// when this generation serves again after it yielded: an upgrade that
// failed after that point, or a rollback during a probation. The hooks are
// registered through internal/reserved, not exported: their contract is
// molt's own.

type yieldHooks struct {
	mu      sync.Mutex // serialises yield and resume
	yielded bool       // yield ran, and resume has not
	list    hooks[yieldHook]
}

type yieldHook struct{ yield, resume func() }

func (y *yieldHooks) add(yield, resume func()) (remove func()) {
	return y.list.add(yieldHook{yield, resume})
}

// yield runs every hook's yield, in order.
func (y *yieldHooks) yield() {
	y.mu.Lock()
	defer y.mu.Unlock()
	y.yielded = true
	y.list.run(func(h yieldHook) { h.yield() })
}

// resume runs every hook's resume if yield ran since the last resume.
func (y *yieldHooks) resume() {
	y.mu.Lock()
	defer y.mu.Unlock()
	if !y.yielded {
		return
	}
	y.yielded = false
	y.list.run(func(h yieldHook) { h.resume() })
}
