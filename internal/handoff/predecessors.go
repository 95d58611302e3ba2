package handoff

import (
	"encoding/binary"
	"math"
)

// Process names one older generation that still runs: what a parent tells
// its successor in a PREDECESSORS frame, so that the serving generation
// knows which of its ancestors are still draining. On the wire it is three
// uvarints: PID, Start, Generation.
type Process struct {
	PID int // 1..math.MaxInt32
	// Start tells this process from a later one that reuses its PID: on
	// Linux its start time in clock ticks since boot (/proc/<pid>/stat,
	// field 22); 0 where the sender could not tell, and the receiver then
	// trusts the PID alone.
	Start      uint64
	Generation uint64 // its generation, 1..MaxGeneration
}

// MaxPredecessors is the largest number of processes a PREDECESSORS frame
// may list; more is [ErrMalformed]. Senders keep the newest.
const MaxPredecessors = 1024

// minProcessLen is the smallest encoding of a Process: three one-byte
// uvarints.
const minProcessLen = 3

// MarshalPredecessors returns the PREDECESSORS payload for ps: a uvarint
// count followed by the processes. It does not validate ps: a PID or
// generation out of range, or more than [MaxPredecessors] processes,
// encode as a payload that [UnmarshalPredecessors] rejects.
func MarshalPredecessors(ps []Process) []byte {
	p := make([]byte, 0, binary.MaxVarintLen64*(1+3*len(ps)))
	p = binary.AppendUvarint(p, uint64(len(ps)))
	for _, x := range ps {
		p = binary.AppendUvarint(p, uint64(x.PID))
		p = binary.AppendUvarint(p, x.Start)
		p = binary.AppendUvarint(p, x.Generation)
	}
	return p
}

// UnmarshalPredecessors decodes a PREDECESSORS payload. It returns an
// error wrapping [ErrMalformed] if the payload is truncated, has trailing
// bytes, lists no process or more than [MaxPredecessors] (or more than its
// bytes can hold), or holds a PID outside 1..math.MaxInt32 or a generation
// outside 1..[MaxGeneration].
func UnmarshalPredecessors(p []byte) ([]Process, error) {
	d := decoder{p: p}
	n := d.uvarint("process count")
	if d.err != nil {
		return nil, d.err
	}
	switch {
	case n == 0:
		return nil, malformed("PREDECESSORS lists no process")
	case n > MaxPredecessors:
		return nil, malformed("PREDECESSORS lists %d processes, more than %d", n, MaxPredecessors)
	case n > uint64(len(d.p)/minProcessLen):
		return nil, malformed("PREDECESSORS of %d processes cannot fit in %d bytes", n, len(d.p))
	}
	ps := make([]Process, n)
	for i := range ps {
		pid := d.uvarint("pid")
		start := d.uvarint("start")
		gen := d.uvarint("generation")
		if d.err != nil {
			return nil, d.err
		}
		if pid == 0 || pid > math.MaxInt32 {
			return nil, malformed("predecessor %d has pid %d, outside 1..%d", i, pid, math.MaxInt32)
		}
		if gen == 0 || gen > MaxGeneration {
			return nil, malformed("predecessor %d has generation %d, outside 1..%d", i, gen, uint64(MaxGeneration))
		}
		ps[i] = Process{PID: int(pid), Start: start, Generation: gen}
	}
	if err := d.finish("PREDECESSORS"); err != nil {
		return nil, err
	}
	return ps, nil
}
