package main

import (
	"math/bits"
	"time"
)

// The latency histogram is log-linear over microseconds: values below
// 2·histSub are counted exactly, larger ones in histSub buckets per power
// of two, so a bucket is at most 1/histSub (0.8%) of its values wide.
// Values are capped at histMax (about 12.7 days).
const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	histMaxBits = 40
	histMax     = 1<<histMaxBits - 1
	histBuckets = histSub * (histMaxBits - histSubBits + 1)
)

// hist counts latencies. The zero value is empty and ready to use.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

// bucketOf returns the bucket of us microseconds.
func bucketOf(us uint64) int {
	if us < 2*histSub {
		return int(us)
	}
	us = min(us, histMax)
	shift := bits.Len64(us) - histSubBits - 1 // keeps the top histSubBits+1 bits
	return histSub*shift + int(us>>shift)
}

// bucketRange returns the smallest value of bucket i and its width.
func bucketRange(i int) (low, width uint64) {
	if i < 2*histSub {
		return uint64(i), 1
	}
	shift := i/histSub - 1
	top := uint64(i%histSub + histSub)
	return top << shift, 1 << shift
}

func (h *hist) add(d time.Duration) {
	us := uint64(max(d.Microseconds(), 0))
	h.counts[bucketOf(us)]++
	h.n++
	h.max = max(h.max, d)
}

// quantile returns the latency below which a fraction q of the values
// lie: the middle of the bucket holding the value of rank ⌈q·n⌉, never
// more than the largest value seen. It is 0 for an empty histogram.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.999999)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := bucketRange(i)
			mid := time.Duration(low)*time.Microsecond + time.Duration(width)*time.Microsecond/2
			if width == 1 {
				mid = time.Duration(low) * time.Microsecond
			}
			return min(mid, h.max)
		}
	}
	return h.max
}

// merge adds the values of o to h.
func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}
