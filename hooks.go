package molt

import "sync"

// hooks is a list of registered callbacks (observers, commit hooks, yield
// hooks). add returns the function that removes one; run calls a function
// on every entry, in the order they were added, with the list's lock held,
// so a callback is never called after its remove returned, and a callback
// must not add or remove (it would wait for that lock).
type hooks[T any] struct {
	mu    sync.Mutex // held while the callbacks run
	items []*T
}

func (l *hooks[T]) add(v T) (remove func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := &v
	l.items = append(l.items, p)
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for i, x := range l.items {
			if x == p {
				l.items = append(l.items[:i:i], l.items[i+1:]...)
				return
			}
		}
	}
}

// run calls f with every entry.
func (l *hooks[T]) run(f func(T)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.items {
		f(*p)
	}
}

// empty reports whether no callback is registered.
func (l *hooks[T]) empty() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.items) == 0
}
