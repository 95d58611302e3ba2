package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsCoverEveryValueOnce(t *testing.T) {
	prev := -1
	for _, us := range []uint64{0, 1, 255, 256, 257, 511, 512, 1000, 1 << 20, 1<<20 + 1, histMax - 1, histMax} {
		i := bucketOf(us)
		low, width := bucketRange(i)
		if us < low || us >= low+width {
			t.Errorf("%d µs: bucket %d holds [%d, %d)", us, i, low, low+width)
		}
		if width > 1 && float64(width)/float64(low) > 1.0/histSub {
			t.Errorf("%d µs: bucket %d is %d wide at %d, more than 1/%d", us, i, width, low, histSub)
		}
		if i < prev {
			t.Errorf("%d µs: bucket %d before the previous value's %d", us, i, prev)
		}
		prev = i
	}
	if i := bucketOf(1 << 62); i != histBuckets-1 {
		t.Errorf("a huge value falls in bucket %d, want the last, %d", i, histBuckets-1)
	}
	// Consecutive buckets are adjacent.
	for i := 1; i < histBuckets; i++ {
		l0, w0 := bucketRange(i - 1)
		l1, _ := bucketRange(i)
		if l0+w0 != l1 {
			t.Fatalf("bucket %d ends at %d, bucket %d starts at %d", i-1, l0+w0, i, l1)
		}
	}
}

func TestQuantileWithinOnePercent(t *testing.T) {
	var h hist
	var all []time.Duration
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		d := time.Duration(rng.ExpFloat64()*2000) * time.Microsecond
		h.add(d)
		all = append(all, d)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := all[int(q*float64(len(all)))-1]
		got := h.quantile(q)
		if diff := (got - want).Abs(); diff > want/100+time.Microsecond {
			t.Errorf("p%v = %v, exact %v", q*100, got, want)
		}
	}
	if p100 := h.quantile(1); p100 > h.max || p100 < h.max-h.max/100 {
		t.Errorf("p100 = %v, max %v", p100, h.max)
	}
	var empty hist
	if empty.quantile(0.5) != 0 {
		t.Errorf("empty histogram's p50 = %v, want 0", empty.quantile(0.5))
	}
}

func TestAroundClassification(t *testing.T) {
	s := time.Second
	triggers := []time.Duration{10 * s, 10*s + 300*time.Millisecond, 20 * s}
	for _, c := range []struct {
		at   time.Duration
		want bool
	}{
		{9 * s, false}, {9*s + 500*time.Millisecond, true}, {10 * s, true},
		{10*s + 800*time.Millisecond, true}, {10*s + 801*time.Millisecond, false},
		{15 * s, false}, {20*s + 500*time.Millisecond, true}, {21 * s, false},
	} {
		if got := nearTrigger(triggers, c.at); got != c.want {
			t.Errorf("nearTrigger(%v) = %v, want %v", c.at, got, c.want)
		}
	}
	// [9.5, 10.8] and [19.5, 20.5], clipped to [0, 20.2].
	if got, want := aroundTime(triggers, 0, 20*s+200*time.Millisecond), 1300*time.Millisecond+700*time.Millisecond; got != want {
		t.Errorf("aroundTime = %v, want %v", got, want)
	}
}

func TestRecorderCountsAndClassifies(t *testing.T) {
	t0 := time.Now().Add(-10 * time.Second)
	r := newRecorder(t0, time.Second, 1)
	r.triggers = []time.Duration{5 * time.Second}
	r.add(0, t0.Add(500*time.Millisecond), time.Millisecond, 0, nil) // warm-up
	r.add(0, t0.Add(2*time.Second), 2*time.Millisecond, 1, nil)
	r.add(0, t0.Add(5200*time.Millisecond), 3*time.Millisecond, 0, nil)
	r.add(0, t0.Add(6*time.Second), 0, 0, errTest("dial tcp 127.0.0.1:40000->127.0.0.1:8080: refused"))
	r.add(0, t0.Add(7*time.Second), 0, 0, errTest("dial tcp 127.0.0.1:40001->127.0.0.1:8080: refused"))
	r.stop()
	r.finish()
	ks := r.kinds[0]
	if ks.ok != 3 || ks.failed != 2 || ks.retries != 1 || ks.steady.n != 1 || ks.around.n != 1 {
		t.Errorf("ok %d failed %d retries %d steady %d around %d; want 3 2 1 1 1", ks.ok, ks.failed, ks.retries, ks.steady.n, ks.around.n)
	}
	if len(ks.errs) != 1 || ks.errs[0].count != 2 || ks.errs[0].text != "dial tcp 127.0.0.1:*->127.0.0.1:*: refused" {
		t.Errorf("errors %+v, want one text counted twice without ports", ks.errs[0])
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }
