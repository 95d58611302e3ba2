package drain

import "context"

// outcome is the result of the first Drain call of an [HTTPServer] or a
// [Tracker], which the later calls return: a drain cannot be started
// twice (its Draining channel is closed once, its connections are gone),
// and a caller that arrives late wants to know how it ended.
type outcome struct {
	done chan struct{} // closed once err is set
	err  error
}

func newOutcome() outcome { return outcome{done: make(chan struct{})} }

// set records the first call's result and releases the waiting calls. It
// is called once, by the first call.
func (o *outcome) set(err error) {
	o.err = err
	close(o.done)
}

// wait returns the first call's result when it has finished, or ctx's
// error if ctx ends first. Only the first call's context bounds the drain:
// a later caller that gives up leaves it running.
func (o *outcome) wait(ctx context.Context) error {
	select {
	case <-o.done:
		return o.err // even if ctx has ended too: the result is known
	default:
	}
	select {
	case <-o.done:
		return o.err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
