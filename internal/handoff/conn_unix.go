//go:build unix

package handoff

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is one end of a handoff conversation over a connected Unix stream
// socket. Its Send methods write whole frames and its Recv methods read
// whole frames; descriptors travel with INVENTORY frames as SCM_RIGHTS.
//
// A Conn is not safe for concurrent Send calls or for concurrent Recv calls,
// but one goroutine sending while another receives is fine, and Close may be
// called at any time from any goroutine (it unblocks pending calls).
//
// Errors are sticky: once a Recv method fails, later Recv calls return the
// same error, and once a frame was written only in part (or an inventory
// only in part), later Send calls return the same error. The exception is a
// deadline that passes before any byte of a frame moved: the Conn stays
// usable and the call may be retried.
type Conn struct {
	uc *net.UnixConn

	// Receive side, used by one goroutine at a time.
	hdr  [headerLen]byte
	oob  []byte // control-message buffer for MaxFDsPerMessage descriptors
	rbuf []byte // payload buffer, reused across frames
	rerr error  // sticky receive error
	idle bool   // the last readFrame error came before any byte of a frame

	// Send side, used by one goroutine at a time.
	werr error // sticky: a frame was written only in part

	mu     sync.Mutex
	closed bool
	queue  []int // descriptors received and not yet handed out or closed
	// wakeR and wakeW are the pipe that wakes WaitReadable at Close; made
	// by its first call; set under mu while not closed, read by Close after.
	wakeR, wakeW *os.File
}

// NewConn returns a Conn speaking the protocol over uc, which must be a
// connected stream (SOCK_STREAM) Unix socket and not nil. The Conn owns uc
// from then on; Close closes it.
func NewConn(uc *net.UnixConn) *Conn {
	return &Conn{uc: uc, oob: make([]byte, unix.CmsgSpace(MaxFDsPerMessage*4))}
}

// SetDeadline sets the read and write deadlines of the underlying socket,
// as net.Conn.SetDeadline does. A Send or Recv that hits the deadline
// returns an error for which errors.Is(err, os.ErrDeadlineExceeded) holds.
func (c *Conn) SetDeadline(t time.Time) error { return c.uc.SetDeadline(t) }

// SetReadDeadline sets the deadline for the Recv methods, as
// net.Conn.SetReadDeadline does.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.uc.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline for the Send methods, as
// net.Conn.SetWriteDeadline does.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.uc.SetWriteDeadline(t) }

// CloseRead shuts down the reading side: the peer's writes fail with
// EPIPE from then on, even one blocked on a full socket.
func (c *Conn) CloseRead() error { return c.uc.CloseRead() }

// SyscallConn gives access to the underlying socket, for checks the
// protocol cannot make (how much the peer has not read yet).
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.uc.SyscallConn() }

// Close closes the socket and every received descriptor that has not been
// returned to the caller. Pending and later calls fail. It returns the error
// from closing the socket.
func (c *Conn) Close() error {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	q := c.queue
	c.queue = nil
	c.mu.Unlock()
	closeFDs(q)
	if already {
		return c.uc.Close() // net.ErrClosed, as a second Close of a socket says
	}
	c.wakeWaiters()
	err := c.uc.Close()
	c.closeWaker()
	return err
}

// SendHello writes a HELLO frame. It blocks until the frame is written or
// the write deadline passes. It returns an error, without writing, if
// h.Generation is above MaxGeneration, h.ParentPID outside
// 0..math.MaxInt32 or h.Entries outside 0..MaxEntries.
func (c *Conn) SendHello(h Hello) error {
	if h.Generation > MaxGeneration {
		return fmt.Errorf("handoff: cannot announce generation %d (at most %d)", h.Generation, uint64(MaxGeneration))
	}
	if h.ParentPID < 0 || int64(h.ParentPID) > math.MaxInt32 {
		return fmt.Errorf("handoff: parent pid %d out of range", h.ParentPID)
	}
	if h.Entries < 0 || h.Entries > MaxEntries {
		return fmt.Errorf("handoff: cannot announce %d entries (at most %d)", h.Entries, MaxEntries)
	}
	return c.write(AppendFrame(nil, TypeHello, h.Marshal()), nil)
}

// SendInventory writes es with their descriptors: fds[i] is the descriptor
// of es[i]. It sends INVENTORY frames of at most MaxFDsPerMessage entries
// (fewer if their payload would exceed MaxPayload); each frame goes in one
// sendmsg together with the SCM_RIGHTS message for its descriptors (if the
// kernel takes only part of a large frame, the rest follows without
// descriptors). It writes nothing if es is empty. The caller keeps
// ownership of fds; the receiver gets duplicates.
//
// It blocks until every frame is written or the write deadline passes. It
// returns an error, without writing, if len(es) != len(fds), if there are
// more than MaxEntries entries, if an entry has an unknown Kind or a
// negative descriptor, or if one entry alone would exceed MaxPayload.
func (c *Conn) SendInventory(es []Entry, fds []int) error {
	if len(es) != len(fds) {
		return fmt.Errorf("handoff: %d entries but %d descriptors", len(es), len(fds))
	}
	if len(es) > MaxEntries {
		return fmt.Errorf("handoff: cannot send %d entries (at most %d)", len(es), MaxEntries)
	}
	// Split into batches first so that nothing is written if any entry is bad.
	var ends []int
	for i := 0; i < len(es); {
		j, size := i, 0
		for ; j < len(es) && j-i < MaxFDsPerMessage; j++ {
			e := &es[j]
			if e.Kind < KindListener || e.Kind > KindFile {
				return fmt.Errorf("handoff: entry %d has unknown kind %d", j, e.Kind)
			}
			if fds[j] < 0 {
				return fmt.Errorf("handoff: entry %d has invalid descriptor %d", j, fds[j])
			}
			l := entryLen(e)
			if size+l > MaxPayload-countRoom {
				break
			}
			size += l
		}
		if j == i {
			return fmt.Errorf("handoff: entry %d (%s %q) is too large for a frame", i, es[i].Kind, es[i].Name)
		}
		ends = append(ends, j)
		i = j
	}
	i := 0
	for n, j := range ends {
		frame := AppendFrame(nil, TypeInventory, MarshalEntries(es[i:j]))
		if err := c.write(frame, unix.UnixRights(fds[i:j]...)); err != nil {
			if n > 0 {
				c.werr = err // the receiver already has part of the inventory
			}
			return err
		}
		i = j
	}
	return nil
}

// countRoom is the space reserved in an INVENTORY payload for its count.
const countRoom = 3 // uvarint of up to MaxFDsPerMessage

// SendReady writes a READY frame. It blocks until the frame is written or
// the write deadline passes.
func (c *Conn) SendReady() error { return c.write(AppendFrame(nil, TypeReady, nil), nil) }

// SendFailed writes a FAILED frame carrying reason, truncated to 4096 bytes.
// It blocks until the frame is written or the write deadline passes.
func (c *Conn) SendFailed(reason string) error {
	return c.write(AppendFrame(nil, TypeFailed, MarshalReason(reason)), nil)
}

// SendConn writes a CONN frame: e (of kind KindConn, its Addr naming the
// listener the connection was accepted on) with the descriptor fd, which
// the caller keeps. It blocks until the frame is written or the write
// deadline passes.
func (c *Conn) SendConn(e Entry, fd int) error {
	if e.Kind != KindConn || fd < 0 {
		return fmt.Errorf("handoff: CONN needs a connection entry and a descriptor (got %v, %d)", e.Kind, fd)
	}
	return c.write(AppendFrame(nil, TypeConn, MarshalEntries([]Entry{e})), unix.UnixRights(fd))
}

// SendAck writes an ACK frame. It blocks until the frame is written or the
// write deadline passes.
func (c *Conn) SendAck() error { return c.write(AppendFrame(nil, TypeAck, nil), nil) }

// SendProbation writes PROBATION: the ACK that follows starts a probation.
func (c *Conn) SendProbation() error { return c.write(AppendFrame(nil, TypeProbation, nil), nil) }

// SendCommitted writes COMMITTED: the probation passed.
func (c *Conn) SendCommitted() error { return c.write(AppendFrame(nil, TypeCommitted, nil), nil) }

// SendStop writes STOP: the child stops on purpose during its probation.
func (c *Conn) SendStop() error { return c.write(AppendFrame(nil, TypeStop, nil), nil) }

// SendTakeover writes TAKEOVER, the taker's first frame.
func (c *Conn) SendTakeover() error { return c.write(AppendFrame(nil, TypeTakeover, nil), nil) }

// SendPredecessors writes PREDECESSORS listing ps, the older generations
// that still run: between 1 and MaxPredecessors of them.
func (c *Conn) SendPredecessors(ps []Process) error {
	if len(ps) == 0 || len(ps) > MaxPredecessors {
		return fmt.Errorf("handoff: PREDECESSORS lists 1 to %d processes (got %d)", MaxPredecessors, len(ps))
	}
	return c.write(AppendFrame(nil, TypePredecessors, MarshalPredecessors(ps)), nil)
}

// RecvHello reads the first frame, which must be HELLO, and returns its
// content. It blocks until a frame arrives or the read deadline passes.
// It returns io.EOF if the stream ends before the frame,
// io.ErrUnexpectedEOF if it ends inside it, a *VersionError for a frame of
// another version, and an error wrapping ErrMalformed for any other frame
// type ("expected HELLO, got READY"), for descriptors sent with it, or for a
// bad payload.
func (c *Conn) RecvHello() (Hello, error) {
	h, err := c.recvHello()
	return h, c.sticky(err)
}

func (c *Conn) recvHello() (Hello, error) {
	t, p, fds, err := c.next()
	if err != nil {
		return Hello{}, err
	}
	closeFDs(fds)
	if t == TypeFailed && len(fds) == 0 {
		return Hello{}, refusal(p)
	}
	if t != TypeHello {
		return Hello{}, malformed("expected HELLO, got %v", t)
	}
	if len(fds) > 0 {
		return Hello{}, malformed("HELLO frame arrived with %s", descriptors(len(fds)))
	}
	return UnmarshalHello(p)
}

// RecvInventory reads INVENTORY frames until exactly n entries have arrived
// and returns them with their descriptors: fds[i] belongs to es[i]. Every
// descriptor is close-on-exec and the caller owns them. If n is 0 it returns
// at once without reading. n is normally Hello.Entries; a negative n or one
// above MaxEntries is an error.
//
// It blocks until all frames arrive or the read deadline passes. On any
// error it closes every descriptor received during the call and returns no
// entries. Errors: io.EOF or io.ErrUnexpectedEOF if the stream ends, a
// *VersionError, an error naming MSG_CTRUNC if descriptors were lost,
// and an error wrapping ErrMalformed for another frame type, a batch whose
// descriptor count differs from its entry count ("inventory batch of 3
// entries arrived with 1 descriptor"), more than n entries, or a bad payload.
func (c *Conn) RecvInventory(n int) ([]Entry, []int, error) {
	if n == 0 {
		return nil, nil, nil
	}
	// Room for all of them at once (up to a bound, for a HELLO that
	// announces more than ever arrives): growing by appending copied
	// 3 MB for 10,000 entries, which the successor's GC then had to chase.
	es := make([]Entry, 0, min(max(n, 0), preallocEntries))
	fds := make([]int, 0, cap(es))
	err := c.RecvInventoryBatches(n, func(batch []Entry, got []int) {
		es = append(es, batch...)
		fds = append(fds, got...)
	})
	if err != nil {
		closeFDs(fds)
		return nil, nil, err
	}
	return es, fds, nil
}

// RecvInventoryBatches is RecvInventory for a receiver that uses the
// entries as they arrive: it calls got with each batch, in order, which
// then owns the batch's descriptors (fds[i] belongs to es[i]; got must not
// keep es or fds, whose memory may be reused). On an error, the batches
// already delivered stay the caller's; everything else received is closed.
func (c *Conn) RecvInventoryBatches(n int, got func(es []Entry, fds []int)) error {
	if n == 0 {
		return nil
	}
	if n < 0 || n > MaxEntries {
		return fmt.Errorf("handoff: cannot receive %d entries (at most %d)", n, MaxEntries)
	}
	for received := 0; received < n; {
		batch, fds, err := c.recvBatch(n - received)
		if err != nil {
			closeFDs(c.drain())
			if received > 0 {
				c.idle = false // part of the inventory is gone: no retry
			}
			return c.sticky(err)
		}
		got(batch, fds)
		received += len(batch)
		if TestHookBatchReceived != nil && received < n {
			TestHookBatchReceived(received, n)
		}
	}
	return nil
}

// preallocEntries bounds what RecvInventory reserves before the entries
// arrive.
const preallocEntries = 16384

// TestHookBatchReceived, if not nil, is called by RecvInventory between two
// INVENTORY batches, with the number of entries received so far and the
// number expected. It is a test hook and nil in production: molt's
// multi-process tests set it in a successor, before New, to crash or pause
// that process in the middle of the hand-off. It is exported only because
// those tests are in another package (export_test.go files do not cross
// packages); the package is internal, so nothing outside the module can
// set it.
var TestHookBatchReceived func(received, total int)

// recvBatch reads one INVENTORY frame of at most limit entries and returns
// its entries and descriptors. On error it closes the descriptors.
func (c *Conn) recvBatch(limit int) ([]Entry, []int, error) {
	t, p, fds, err := c.next()
	if err != nil {
		return nil, nil, err
	}
	var batch []Entry
	if t == TypeFailed && len(fds) == 0 {
		err = refusal(p)
	} else if t != TypeInventory {
		err = malformed("expected INVENTORY, got %v", t)
	} else if batch, err = UnmarshalEntries(p); err == nil {
		switch {
		case len(batch) == 0:
			err = malformed("empty inventory batch")
		case len(fds) != len(batch):
			err = malformed("inventory batch of %d entries arrived with %s", len(batch), descriptors(len(fds)))
		case len(batch) > limit:
			err = malformed("inventory batch of %d entries exceeds the %d still expected", len(batch), limit)
		}
	}
	if err != nil {
		closeFDs(fds)
		return nil, nil, err
	}
	return batch, fds, nil
}

// RecvMessage reads the next frame, which must be READY, FAILED, ACK,
// CONN, PROBATION, COMMITTED, STOP or PREDECESSORS, and returns it; Reason
// is set for FAILED, Entry and FD (owned by the caller from then on) for
// CONN, Predecessors for PREDECESSORS. It blocks until a frame arrives or
// the read deadline passes. It returns io.EOF if the stream ends cleanly
// between frames (for the child: the parent is gone), io.ErrUnexpectedEOF
// if it ends inside a frame, a *VersionError for a frame of another
// version, and an error wrapping ErrMalformed for a HELLO, INVENTORY or STATE frame,
// for descriptors, or for a bad payload.
func (c *Conn) RecvMessage() (Message, error) {
	m, err := c.recvMessage()
	return m, c.sticky(err)
}

func (c *Conn) recvMessage() (Message, error) {
	t, p, fds, err := c.next()
	if err != nil {
		return Message{}, err
	}
	if t == TypeConn {
		return recvConn(p, fds)
	}
	closeFDs(fds)
	switch {
	case t == TypeHello || t == TypeInventory || t == TypeState:
		return Message{}, malformed("unexpected %v frame", t)
	case len(fds) > 0:
		return Message{}, malformed("%v frame arrived with %s", t, descriptors(len(fds)))
	case t == TypeFailed:
		r, err := UnmarshalReason(p)
		if err != nil {
			return Message{}, err
		}
		return Message{Type: t, Reason: r}, nil
	case t == TypePredecessors:
		ps, err := UnmarshalPredecessors(p)
		if err != nil {
			return Message{}, err
		}
		return Message{Type: t, Predecessors: ps}, nil
	}
	return Message{Type: t}, nil
}

// recvConn decodes a CONN frame: one entry and exactly one descriptor.
func recvConn(p []byte, fds []int) (Message, error) {
	es, err := UnmarshalEntries(p)
	switch {
	case err != nil:
	case len(es) != 1 || es[0].Kind != KindConn:
		err = malformed("CONN frame with %d entries (want one connection)", len(es))
	case len(fds) != 1:
		err = malformed("CONN frame arrived with %s", descriptors(len(fds)))
	}
	if err != nil {
		closeFDs(fds)
		return Message{}, err
	}
	return Message{Type: TypeConn, Entry: es[0], FD: fds[0]}, nil
}

// sticky records err as the receive error for all later calls, unless it is
// nil or a failure before any byte of a frame was read.
func (c *Conn) sticky(err error) error {
	if err != nil && !c.idle {
		c.rerr = err
	}
	return err
}

// next reads one frame and returns it with the descriptors that arrived
// while reading it. On error it closes those descriptors.
func (c *Conn) next() (Type, []byte, []int, error) {
	t, p, err := c.readFrame()
	fds := c.drain()
	if err != nil {
		closeFDs(fds)
		return 0, nil, nil, err
	}
	return t, p, fds, nil
}

// readFrame reads exactly one header and its payload. The payload is valid
// until the next call.
func (c *Conn) readFrame() (Type, []byte, error) {
	c.idle = false
	if c.rerr != nil {
		return 0, nil, c.rerr
	}
	n, err := c.readFull(c.hdr[:])
	if err != nil {
		if n > 0 {
			return 0, nil, unexpectedEOF(err)
		}
		c.idle = !errors.Is(err, io.EOF)
		if !c.idle {
			return 0, nil, io.EOF // bare, so that err == io.EOF holds
		}
		return 0, nil, err
	}
	t, plen, err := ParseHeader(c.hdr)
	if err != nil {
		return 0, nil, err
	}
	if cap(c.rbuf) < plen {
		c.rbuf = make([]byte, plen)
	}
	p := c.rbuf[:plen]
	if _, err := c.readFull(p); err != nil {
		return 0, nil, unexpectedEOF(err)
	}
	return t, p, nil
}

// readFull fills b with as many ReadMsgUnix calls as it takes, queueing the
// descriptors that arrive. It returns how many bytes it read.
func (c *Conn) readFull(b []byte) (int, error) {
	got := 0
	for got < len(b) {
		n, oobn, flags, _, err := c.uc.ReadMsgUnix(b[got:], c.oob)
		got += max(n, 0)
		if oobn > 0 {
			if qerr := c.enqueue(rights(c.oob[:oobn])); qerr != nil && err == nil {
				err = qerr
			}
		}
		if err == nil && flags&unix.MSG_CTRUNC != 0 {
			err = errTruncated
		}
		if err != nil {
			return got, err
		}
	}
	return got, nil
}

// write writes b completely, sending oob with its first part.
func (c *Conn) write(b, oob []byte) error {
	if c.werr != nil {
		return c.werr
	}
	sent := 0
	for sent < len(b) {
		n, oobn, err := c.uc.WriteMsgUnix(b[sent:], oob, nil)
		if n > 0 || oobn > 0 {
			oob = nil // the descriptors went with the first byte
		}
		sent += max(n, 0)
		if err == nil && n <= 0 {
			err = io.ErrShortWrite
		}
		if err != nil {
			if sent > 0 {
				c.werr = err
			}
			return err
		}
	}
	return nil
}

// enqueue adds received descriptors to the queue, or closes them if the
// Conn is closed.
func (c *Conn) enqueue(fds []int) error {
	if len(fds) == 0 {
		return nil
	}
	// They are close-on-exec already: ReadMsgUnix receives with
	// MSG_CMSG_CLOEXEC, or sets the flag at once where the system lacks
	// it (one fcntl per descriptor saved here, measured: 10,000 in a
	// 10,000-listener hand-off).
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		closeFDs(fds)
		return net.ErrClosed
	}
	c.queue = append(c.queue, fds...)
	return nil
}

// drain removes and returns every queued descriptor.
func (c *Conn) drain() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queue
	c.queue = nil
	return q
}

// errTruncated reports MSG_CTRUNC. On Linux the kernel also truncates when
// this process runs out of descriptors (RLIMIT_NOFILE) or a security module
// refuses one, so it is not necessarily the peer's fault.
var errTruncated = fmt.Errorf("handoff: descriptors lost: control message truncated (MSG_CTRUNC): the peer sent more than %d with one message, or this process is out of descriptors", MaxFDsPerMessage)

// unexpectedEOF turns io.EOF inside a frame into io.ErrUnexpectedEOF.
func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func descriptors(n int) string {
	if n == 1 {
		return "1 descriptor"
	}
	return fmt.Sprintf("%d descriptors", n)
}
