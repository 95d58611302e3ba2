package handoff

import "encoding/binary"

// The application's state (molt's Options.SaveState): one blob and the
// version string the application gave it, sent by the parent after the
// inventory when its HELLO announced it (Hello.State). On the wire it is
// STATE frames:
//
//	first   uvarint size (0..MaxState), string version (0..MaxStateVersion bytes)
//	then    the data, in frames of 1..MaxPayload bytes each, as many as size takes
//
// The data frames carry the bytes and nothing else, so the receiver reads
// them straight into the one buffer of the announced size: the blob is in
// memory once. Descriptors never travel with STATE frames.

// MaxState is the largest state, in bytes, a STATE header may announce;
// more is [ErrMalformed]. 64 MiB is far more than the state a service
// hands on (keys, counters, caches of a few thousand entries), small
// enough for a successor to allocate at once on its parent's word, and a
// copy through a local socket that takes a fraction of any ReadyTimeout.
// Larger state belongs in a file passed with the inventory (a memfd, say).
const MaxState = 64 << 20

// MaxStateVersion is the longest state version, in bytes.
const MaxStateVersion = 256

// StateHeader is the payload of the first STATE frame.
type StateHeader struct {
	Size    int    // the data's length in bytes, 0..MaxState
	Version string // the application's name for the data's format
}

// Marshal returns the payload of the first STATE frame for h. It does not
// validate h: [UnmarshalStateHeader] rejects a size or version out of
// bounds.
func (h StateHeader) Marshal() []byte {
	p := make([]byte, 0, 2*binary.MaxVarintLen64+len(h.Version))
	p = binary.AppendUvarint(p, uint64(h.Size))
	return appendString(p, h.Version)
}

// UnmarshalStateHeader decodes the payload of the first STATE frame. It
// returns an error wrapping [ErrMalformed] if the payload is truncated,
// has trailing bytes, announces more than [MaxState] bytes or has a
// version longer than [MaxStateVersion].
func UnmarshalStateHeader(p []byte) (StateHeader, error) {
	d := decoder{p: p}
	size := d.uvarint("state size")
	version := d.string("state version")
	if err := d.finish("STATE"); err != nil {
		return StateHeader{}, err
	}
	if size > MaxState {
		return StateHeader{}, malformed("STATE announces %d bytes, more than %d", size, MaxState)
	}
	if len(version) > MaxStateVersion {
		return StateHeader{}, malformed("STATE version of %d bytes, more than %d", len(version), MaxStateVersion)
	}
	return StateHeader{Size: int(size), Version: version}, nil
}
