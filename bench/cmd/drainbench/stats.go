package main

import (
	"regexp"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/moltgo/molt/bench/internal/h2count"
)

const (
	// aroundHalf: a request is "around" an upgrade if it started within
	// this long of the SIGHUP.
	aroundHalf = 500 * time.Millisecond
	// classifyLag is how long after a request started it is classified:
	// by then every SIGHUP that could make it "around" has been recorded.
	classifyLag = aroundHalf + 200*time.Millisecond
	// slotWidth is the resolution of the request counts over time.
	slotWidth = 10 * time.Millisecond
	// maxErrTexts distinct error texts are kept per kind; the others
	// are only counted.
	maxErrTexts = 8
)

// sample is one finished request, kept only until it is classified.
type sample struct {
	start time.Duration // since the load began
	lat   time.Duration
}

// errText is one distinct error of a kind of client.
type errText struct {
	text        string
	detail      string // the first one's connection
	count       int
	first, last time.Duration // start of the failed requests, since the load began
}

// slot counts the requests that started in one slotWidth of the load.
type slot struct{ ok, failed int32 }

// kindStats is what one kind of client saw.
type kindStats struct {
	mu        sync.Mutex // protects everything below
	pending   []sample   // succeeded, not classified yet
	ok        int64
	failed    int64
	retries   int64 // extra connections Go's Transport took for a request (transparent retries)
	errs      []*errText
	otherErrs int // failures whose text was not kept
	steady    hist
	around    hist
	slots     []slot
}

// recorder collects the results of all kinds and the upgrade times.
type recorder struct {
	t0      time.Time     // the load began
	measure time.Duration // requests that started earlier (warm-up) are counted, not measured
	kinds   []*kindStats

	mu       sync.Mutex
	triggers []time.Duration // SIGHUPs sent, since t0, in order
	end      time.Duration   // the load ended (no request started later); 0 while it runs
}

func newRecorder(t0 time.Time, measure time.Duration, kinds int) *recorder {
	r := &recorder{t0: t0, measure: measure}
	for range kinds {
		r.kinds = append(r.kinds, &kindStats{})
	}
	return r
}

// trigger records a SIGHUP about to be sent now and returns its offset.
func (r *recorder) trigger() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := time.Since(r.t0)
	r.triggers = append(r.triggers, t)
	return t
}

// add records one finished request of kind k.
func (r *recorder) add(k int, start time.Time, lat time.Duration, retries int, err error) {
	ks := r.kinds[k]
	off := start.Sub(r.t0)
	i := int(off / slotWidth)
	ks.mu.Lock()
	defer ks.mu.Unlock()
	for len(ks.slots) <= i {
		ks.slots = append(ks.slots, slot{})
	}
	ks.retries += int64(retries)
	if err == nil {
		ks.ok++
		ks.slots[i].ok++
		ks.pending = append(ks.pending, sample{start: off, lat: lat})
		return
	}
	ks.failed++
	ks.slots[i].failed++
	text := normalizeErr(err.Error())
	for _, e := range ks.errs {
		if e.text == text {
			e.count++
			e.last = off
			return
		}
	}
	if len(ks.errs) < maxErrTexts {
		e := &errText{text: text, count: 1, first: off, last: off}
		switch re := err.(type) {
		case *requestError:
			e.detail = re.detail()
		case *h2count.Failure:
			e.detail = normalizeErr(re.Detail)
		}
		ks.errs = append(ks.errs, e)
	} else {
		ks.otherErrs++
	}
}

var addrPort = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+):\d+`)

// normalizeErr drops the client's port numbers from an error text, so that
// the same failure on different connections reads the same.
func normalizeErr(s string) string { return addrPort.ReplaceAllString(s, "$1:*") }

// classify moves the samples that started before cutoff (all of them if
// final) into the steady or around histogram.
func (r *recorder) classify(final bool) {
	r.mu.Lock()
	triggers := slices.Clone(r.triggers)
	r.mu.Unlock()
	cutoff := time.Since(r.t0) - classifyLag
	for _, ks := range r.kinds {
		ks.mu.Lock()
		kept := ks.pending[:0]
		for _, s := range ks.pending {
			switch {
			case !final && s.start > cutoff:
				kept = append(kept, s)
			case s.start < r.measure:
				// warm-up: counted in ok, not measured
			case nearTrigger(triggers, s.start):
				ks.around.add(s.lat)
			default:
				ks.steady.add(s.lat)
			}
		}
		clear(ks.pending[len(kept):])
		ks.pending = kept
		ks.mu.Unlock()
	}
}

// nearTrigger reports whether t is within aroundHalf of a trigger.
func nearTrigger(triggers []time.Duration, t time.Duration) bool {
	i := sort.Search(len(triggers), func(i int) bool { return triggers[i] >= t-aroundHalf })
	return i < len(triggers) && triggers[i] <= t+aroundHalf
}

// stop marks the end of the load: no request starts later.
func (r *recorder) stop() {
	r.mu.Lock()
	r.end = time.Since(r.t0)
	r.mu.Unlock()
}

// finish classifies what is left, once every client has returned.
func (r *recorder) finish() { r.classify(true) }

// aroundTime returns how much of the measured part of the load lay within
// aroundHalf of a trigger.
func aroundTime(triggers []time.Duration, from, to time.Duration) time.Duration {
	var total time.Duration
	cur := from // everything before cur is accounted for
	for _, t := range triggers {
		lo, hi := max(t-aroundHalf, cur), min(t+aroundHalf, to)
		if hi > lo {
			total += hi - lo
			cur = hi
		}
	}
	return total
}

// windowRate returns the successful requests per second of ks that
// started within aroundHalf of t, at slotWidth resolution.
func (ks *kindStats) windowRate(t time.Duration) float64 {
	ok := make([]int, len(ks.slots))
	for i, s := range ks.slots {
		ok[i] = int(s.ok)
	}
	return windowRate(ok, t)
}
