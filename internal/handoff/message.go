package handoff

import (
	"encoding/binary"
	"math"
	"strconv"
	"unicode/utf8"
)

// Kind says what an inventory entry's descriptor is.
type Kind uint8

// The entry kinds. A payload with any other value is [ErrMalformed].
const (
	KindListener   Kind = 1 // a stream listener (net.Listener)
	KindPacketConn Kind = 2 // a datagram socket (net.PacketConn)
	KindConn       Kind = 3 // a connected socket (net.Conn)
	KindFile       Kind = 4 // any other file (*os.File)
)

// String returns "listener", "packet-conn", "conn" or "file", or "Kind(n)"
// for an unknown value.
func (k Kind) String() string {
	switch k {
	case KindListener:
		return "listener"
	case KindPacketConn:
		return "packet-conn"
	case KindConn:
		return "conn"
	case KindFile:
		return "file"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Entry describes one descriptor handed to the successor. On the wire it is
// kind, network, addr, name, pathdev, pathino: strings as a uvarint length
// and bytes, integers as uvarints.
type Entry struct {
	Kind    Kind
	Network string // "tcp", "tcp4", "tcp6", "unix", "unixpacket", "udp", "udp4", "udp6", "unixgram"; "" for files
	Addr    string // canonical requested address; "" for named entries
	Name    string // explicit name; "" for address-keyed entries
	PathDev uint64 // identity (st_dev, st_ino) of the Unix socket file the sender created; 0 if none
	PathIno uint64
}

// Hello is the payload of the HELLO frame that opens the conversation. On
// the wire it is three uvarints: Generation, ParentPID, Entries; then, only
// if a flag is set, a fourth: the flags (bit 0: State). A HELLO without
// flags is what a sender that knows none writes, so it is read alike.
type Hello struct {
	Generation uint64 // the receiver's generation (sender's + 1)
	ParentPID  int    // the sender's process ID, 0..math.MaxInt32
	Entries    int    // how many inventory entries follow, 0..MaxEntries
	State      bool   // STATE frames follow the inventory (see SendState)
}

// The HELLO flags. A flag this package does not know is ErrMalformed: it
// would announce frames the receiver cannot read.
const (
	helloState = 1 << 0 // Hello.State
	helloFlags = helloState
)

// Message is a frame that carries no descriptors and at most a reason: what
// [Conn.RecvMessage] returns.
type Message struct {
	Type   Type   // TypeReady, TypeFailed, TypeAck, TypeConn, TypePredecessors, ...
	Reason string // why the child gave up; only for TypeFailed
	Entry  Entry  // the connection and the listener it came from; only for TypeConn
	FD     int    // the connection's descriptor, owned by the caller; only for TypeConn
	// Predecessors are the older generations still running; only for
	// TypePredecessors.
	Predecessors []Process
}

// maxReason caps the bytes of a FAILED reason written by MarshalReason.
const maxReason = 4096

// minEntryLen is the smallest encoding of an Entry: six one-byte fields.
const minEntryLen = 6

// Marshal returns the HELLO payload for h. It does not validate h: a
// negative or out-of-range ParentPID or Entries encodes as a value that
// [UnmarshalHello] rejects.
func (h Hello) Marshal() []byte {
	p := make([]byte, 0, 4*binary.MaxVarintLen64)
	p = binary.AppendUvarint(p, h.Generation)
	p = binary.AppendUvarint(p, uint64(h.ParentPID))
	p = binary.AppendUvarint(p, uint64(h.Entries))
	if h.State {
		p = binary.AppendUvarint(p, helloState)
	}
	return p
}

// UnmarshalHello decodes a HELLO payload. It returns an error wrapping
// [ErrMalformed] if the payload is truncated, has trailing bytes, announces
// a generation above [MaxGeneration], holds a parent PID outside 0..math.MaxInt32,
// announces more than [MaxEntries] entries, or has a flag this package
// does not know.
func UnmarshalHello(p []byte) (Hello, error) {
	d := decoder{p: p}
	gen := d.uvarint("generation")
	pid := d.uvarint("parent pid")
	n := d.uvarint("entry count")
	var flags uint64
	if d.err == nil && len(d.p) > 0 {
		flags = d.uvarint("flags")
	}
	if err := d.finish("HELLO"); err != nil {
		return Hello{}, err
	}
	if flags&^helloFlags != 0 {
		return Hello{}, malformed("HELLO has unknown flags %#x", flags&^helloFlags)
	}
	if gen > MaxGeneration {
		return Hello{}, malformed("HELLO announces generation %d, more than %d", gen, uint64(MaxGeneration))
	}
	if pid > math.MaxInt32 {
		return Hello{}, malformed("parent pid %d does not fit in 32 bits", pid)
	}
	if n > MaxEntries {
		return Hello{}, malformed("HELLO announces %d entries, more than %d", n, MaxEntries)
	}
	return Hello{Generation: gen, ParentPID: int(pid), Entries: int(n), State: flags&helloState != 0}, nil
}

// MarshalEntries returns the INVENTORY payload for es: a uvarint count
// followed by the entries. It does not validate or split es; [Conn.SendInventory]
// does both.
func MarshalEntries(es []Entry) []byte {
	n := binary.MaxVarintLen64
	for i := range es {
		n += entryLen(&es[i])
	}
	p := make([]byte, 0, n)
	p = binary.AppendUvarint(p, uint64(len(es)))
	for i := range es {
		p = appendEntry(p, &es[i])
	}
	return p
}

// UnmarshalEntries decodes an INVENTORY payload. It returns an error wrapping
// [ErrMalformed] if the payload is truncated, has trailing bytes, declares
// more than [MaxEntries] entries or more than its bytes can hold, has a
// string longer than the bytes left, or has a kind outside KindListener..KindFile.
func UnmarshalEntries(p []byte) ([]Entry, error) {
	d := decoder{p: p}
	n := d.uvarint("entry count")
	if d.err != nil {
		return nil, d.err
	}
	if n > MaxEntries {
		return nil, malformed("inventory of %d entries exceeds %d", n, MaxEntries)
	}
	if n > uint64(len(d.p)/minEntryLen) {
		return nil, malformed("inventory of %d entries cannot fit in %d bytes", n, len(d.p))
	}
	es := make([]Entry, n)
	for i := range es {
		e := &es[i]
		kind := d.uvarint("kind")
		e.Network = d.string("network")
		e.Addr = d.string("addr")
		e.Name = d.string("name")
		e.PathDev = d.uvarint("pathdev")
		e.PathIno = d.uvarint("pathino")
		if d.err != nil {
			return nil, d.err
		}
		if kind < uint64(KindListener) || kind > uint64(KindFile) {
			return nil, malformed("entry %d has unknown kind %d", i, kind)
		}
		e.Kind = Kind(kind)
	}
	if err := d.finish("INVENTORY"); err != nil {
		return nil, err
	}
	return es, nil
}

// MarshalReason returns the FAILED payload for reason. A reason longer than
// 4096 bytes is truncated, backing off to a UTF-8 character boundary.
func MarshalReason(s string) []byte {
	if len(s) > maxReason {
		cut := maxReason
		for i := 0; i < utf8.UTFMax-1 && cut > 0 && !utf8.RuneStart(s[cut]); i++ {
			cut--
		}
		if !utf8.RuneStart(s[cut]) {
			cut = maxReason // not UTF-8 anyway: cut at the byte limit
		}
		s = s[:cut]
	}
	p := make([]byte, 0, binary.MaxVarintLen64+len(s))
	return appendString(p, s)
}

// UnmarshalReason decodes a FAILED payload. It returns an error wrapping
// [ErrMalformed] if the payload is truncated or has trailing bytes.
func UnmarshalReason(p []byte) (string, error) {
	d := decoder{p: p}
	s := d.string("reason")
	if err := d.finish("FAILED"); err != nil {
		return "", err
	}
	return s, nil
}

func appendString(p []byte, s string) []byte {
	p = binary.AppendUvarint(p, uint64(len(s)))
	return append(p, s...)
}

func appendEntry(p []byte, e *Entry) []byte {
	p = binary.AppendUvarint(p, uint64(e.Kind))
	p = appendString(p, e.Network)
	p = appendString(p, e.Addr)
	p = appendString(p, e.Name)
	p = binary.AppendUvarint(p, e.PathDev)
	return binary.AppendUvarint(p, e.PathIno)
}

// entryLen returns the encoded size of e.
func entryLen(e *Entry) int {
	return uvarintLen(uint64(e.Kind)) +
		uvarintLen(uint64(len(e.Network))) + len(e.Network) +
		uvarintLen(uint64(len(e.Addr))) + len(e.Addr) +
		uvarintLen(uint64(len(e.Name))) + len(e.Name) +
		uvarintLen(e.PathDev) + uvarintLen(e.PathIno)
}

func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

// decoder reads fields from a payload, remembering the first error so that
// callers check once after a run of fields.
type decoder struct {
	p   []byte
	err error
}

func (d *decoder) uvarint(field string) uint64 { return d.uvarintOf(field, "") }

// uvarintOf reads a varint named field+suffix in errors. The name is put
// together only for an error: decoding 10,000 entries would otherwise
// allocate 30,000 names.
func (d *decoder) uvarintOf(field, suffix string) uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.p)
	switch {
	case n == 0:
		d.err = malformed("truncated %s%s", field, suffix)
		return 0
	case n < 0:
		d.err = malformed("%s%s overflows 64 bits", field, suffix)
		return 0
	}
	d.p = d.p[n:]
	return x
}

// string reads a string; a network name is returned as the constant it
// equals, without an allocation.
func (d *decoder) string(field string) string {
	n := d.uvarintOf(field, " length")
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.p)) {
		d.err = malformed("%s of %d bytes exceeds the %d bytes left", field, n, len(d.p))
		return ""
	}
	b := d.p[:n]
	d.p = d.p[n:]
	for _, known := range knownStrings {
		if string(b) == known { // compared without a conversion
			return known
		}
	}
	return string(b)
}

// knownStrings are the values most entries share: their networks.
var knownStrings = [...]string{"tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "unix", "unixpacket", "unixgram"}

// finish returns the first error, or an error if bytes are left over.
func (d *decoder) finish(what string) error {
	if d.err == nil && len(d.p) > 0 {
		d.err = malformed("%d trailing bytes after %s payload", len(d.p), what)
	}
	return d.err
}
