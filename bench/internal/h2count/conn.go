package h2count

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// Our receive windows: a stream's (SETTINGS_INITIAL_WINDOW_SIZE) and
	// the connection's (raised once after the preface). What was received
	// is returned with WINDOW_UPDATE once windowReturn bytes have
	// accumulated, so neither window ever runs out.
	streamRecvWindow = 1 << 22
	connRecvWindow   = 1 << 30
	windowReturn     = 1 << 20
	// maxHeaderList is our SETTINGS_MAX_HEADER_LIST_SIZE.
	maxHeaderList = 1 << 16
	// ourMaxFrame is the largest frame we accept: the default
	// SETTINGS_MAX_FRAME_SIZE, which we never raise.
	ourMaxFrame = 16384
	// maxStreamID is the largest stream id (2^31-1).
	maxStreamID = 1<<31 - 1
	// defaultWindow is HTTP/2's initial flow-control window.
	defaultWindow = 65535
)

// stream is one stream a connection opened.
type stream struct {
	id       uint32
	start    time.Time
	deadline time.Time
	body     []byte // still to send (opener only)
	sendWin  int64  // the server's window for this stream (under conn.mu)
	status   int    // of the final response HEADERS; 0 before
	unacked  int    // received DATA bytes not yet returned by WINDOW_UPDATE
}

// finished is a stream that ended, to be counted once conn.mu is released.
type finished struct {
	r       Result
	aborted string // the detail of an aborted stream
}

// conn is one HTTP/2 connection: the slot's goroutine opens streams and
// expires them (run), a reader goroutine handles what the server sends
// (read).
type conn struct {
	cl       *client
	nc       net.Conn
	name     string        // local → remote, for the details
	readDone chan struct{} // closed when read returns
	settings chan struct{} // closed at the server's first SETTINGS
	changed  chan struct{} // a wake-up for run: something it waits for changed

	// wmu serialises the writes: every frame is written under it, and a
	// stream is opened only under it after checking for a GOAWAY.
	wmu    sync.Mutex
	bw     *bufio.Writer
	fr     *http2.Framer // writes under wmu; reads in read only
	enc    *hpack.Encoder
	encBuf bytes.Buffer
	nextID uint32

	mu           sync.Mutex // guards the fields below
	streams      map[uint32]*stream
	order        []uint32 // ids of the open streams in opening order (ended ones are dropped lazily)
	done         []finished
	peerMax      uint32 // SETTINGS_MAX_CONCURRENT_STREAMS
	peerInitWin  int64  // SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame int    // SETTINGS_MAX_FRAME_SIZE
	peerTable    uint32 // SETTINGS_HEADER_TABLE_SIZE, applied to enc under wmu
	sendWin      int64  // the server's connection window
	recvUnacked  int    // connection-level received bytes not yet returned
	goAway       bool   // a GOAWAY was read: open no more streams
	lastID       uint32 // the lowest last stream id of the GOAWAYs
	dead         bool   // read has ended
	deadErr      error  // why
	deadCause    Cause  // Closed, or Protocol for a connection error
	gotSettings  bool
}

// dial makes a connection and waits for the server's SETTINGS.
func (cl *client) dial(ctx context.Context) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, cl.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", cl.cfg.Addr)
	if err != nil {
		return nil, err
	}
	if cl.cfg.TLS != nil {
		tc := tls.Client(nc, cl.cfg.TLS)
		if err := tc.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", cl.cfg.Addr, err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			tc.Close()
			return nil, fmt.Errorf("ALPN with %s: the server chose %q, not h2", cl.cfg.Addr, p)
		}
		nc = tc
	}
	c := &conn{
		cl:           cl,
		nc:           nc,
		name:         fmt.Sprintf("connection %v → %v", nc.LocalAddr(), nc.RemoteAddr()),
		readDone:     make(chan struct{}),
		settings:     make(chan struct{}),
		changed:      make(chan struct{}, 1),
		bw:           bufio.NewWriterSize(nc, 16<<10),
		nextID:       1,
		streams:      make(map[uint32]*stream),
		peerMax:      uint32(cl.cfg.Streams),
		peerInitWin:  defaultWindow,
		peerMaxFrame: ourMaxFrame,
		peerTable:    4096,
		sendWin:      defaultWindow,
	}
	c.fr = http2.NewFramer(c.bw, bufio.NewReaderSize(nc, 32<<10))
	c.fr.SetMaxReadFrameSize(ourMaxFrame)
	c.fr.MaxHeaderListSize = maxHeaderList
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.encBuf)

	if err := c.preface(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: writing the preface: %w", c.name, err)
	}
	go c.read()
	select {
	case <-c.settings:
		cl.add(&cl.counts.Conns)
		return c, nil
	case <-c.readDone:
		err = c.deadError()
	case <-dctx.Done():
		err = fmt.Errorf("no SETTINGS from the server: %w", dctx.Err())
	}
	nc.Close()
	<-c.readDone
	return nil, fmt.Errorf("%s: %w", c.name, err)
}

func (c *conn) deadError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadErr
}

// preface writes the client preface, our SETTINGS and the connection
// window's increase.
func (c *conn) preface() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.writeDeadline()
	if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
		return err
	}
	err := c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamRecvWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
	)
	if err == nil {
		err = c.fr.WriteWindowUpdate(0, connRecvWindow-defaultWindow)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	return err
}

// writeDeadline bounds the writes that follow (under wmu): a server that
// stops reading ends the connection instead of blocking the client.
func (c *conn) writeDeadline() { c.nc.SetWriteDeadline(time.Now().Add(c.cl.cfg.StreamTimeout)) }

// notify wakes run.
func (c *conn) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// unlock releases mu and counts the streams that ended meanwhile.
func (c *conn) unlock() {
	done := c.done
	c.done = nil
	c.mu.Unlock()
	for _, f := range done {
		c.cl.ended(f.r, f.aborted)
	}
}

// endLocked ends s: answered, or failed with cause (or aborted); the
// format and args describe what happened.
func (c *conn) endLocked(s *stream, cause Cause, answered bool, format string, args ...any) {
	delete(c.streams, s.id)
	now := time.Now()
	r := Result{Start: s.start, Latency: now.Sub(s.start)}
	if answered {
		c.done = append(c.done, finished{r: r})
		return
	}
	detail := fmt.Sprintf("stream %d on %s: ", s.id, c.name) + fmt.Sprintf(format, args...)
	if cause == Aborted {
		c.done = append(c.done, finished{r: r, aborted: detail})
		return
	}
	r.Err = &Failure{Cause: cause, StreamID: s.id, Detail: detail}
	c.done = append(c.done, finished{r: r})
}

// limitLocked is how many streams may be open at once.
func (c *conn) limitLocked() int { return min(c.cl.cfg.Streams, int(min(c.peerMax, 1<<20))) }

// run opens streams until the connection ends, a GOAWAY came and the
// streams it let through have ended, the budget is spent, or ctx ended
// and the grace is over. It closes the connection, counts what was still
// open, and returns the number of streams it sent.
func (c *conn) run(ctx context.Context) (sent int) {
	var (
		stopAt  time.Time // ctx ended
		noMore  bool      // the budget is spent, or stream ids ran out
		aborted bool      // the grace ran out
	)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	done := ctx.Done()
	defer func() {
		c.nc.Close()
		<-c.readDone
		c.mu.Lock()
		cause, why := Closed, "the connection closed"
		switch {
		case aborted:
			cause, why = Aborted, fmt.Sprintf("no response within %v after the stop", c.cl.cfg.StopGrace)
		case c.dead && c.deadCause == Protocol:
			cause, why = Protocol, fmt.Sprintf("the connection failed: %v", c.deadErr)
		case c.dead && c.deadErr != nil:
			why = fmt.Sprintf("the connection ended: %v", c.deadErr)
		}
		for _, id := range c.order {
			if s, ok := c.streams[id]; ok {
				c.endLocked(s, cause, false, "%s", why)
			}
		}
		c.order = nil
		c.unlock()
	}()
	for {
		now := time.Now()
		if !stopAt.IsZero() && !now.Before(stopAt.Add(c.cl.cfg.StopGrace)) {
			c.mu.Lock()
			aborted = len(c.streams) > 0
			c.mu.Unlock()
			return sent
		}
		c.mu.Lock()
		expired := c.expireLocked(now)
		open, dead, goAway := len(c.streams), c.dead, c.goAway
		c.unlock()
		if len(expired) > 0 {
			c.reset(expired, http2.ErrCodeCancel)
		}
		switch {
		case dead:
			return sent
		case (goAway || noMore || !stopAt.IsZero()) && open == 0:
			return sent
		}
		if !goAway && !noMore && stopAt.IsZero() {
			n, spent, err := c.open()
			sent += n
			if err != nil {
				return sent // counted as closed by the deferred function
			}
			if spent {
				noMore = true
				continue // perhaps nothing is open any more
			}
		}
		if err := c.pump(); err != nil {
			return sent
		}
		// Wait for a change, the oldest stream's deadline or the grace's end.
		wake := time.Now().Add(time.Hour)
		c.mu.Lock()
		if d, ok := c.oldestDeadlineLocked(); ok {
			wake = d
		}
		c.mu.Unlock()
		if g := stopAt.Add(c.cl.cfg.StopGrace); !stopAt.IsZero() && g.Before(wake) {
			wake = g
		}
		timer.Reset(time.Until(wake))
		select {
		case <-c.changed:
		case <-c.readDone:
		case <-timer.C:
		case <-done:
			stopAt, done = time.Now(), nil
		}
	}
}

// expireLocked fails the streams whose deadline passed and returns their
// ids, to be reset. Streams are opened in deadline order, so it looks at
// the oldest ones only.
func (c *conn) expireLocked(now time.Time) []uint32 {
	var ids []uint32
	for len(c.order) > 0 {
		s, ok := c.streams[c.order[0]]
		if ok && now.Before(s.deadline) {
			break
		}
		c.order = c.order[1:]
		if ok {
			c.endLocked(s, Timeout, false, "no complete response within %v (status %d so far)", c.cl.cfg.StreamTimeout, s.status)
			ids = append(ids, s.id)
		}
	}
	return ids
}

// oldestDeadlineLocked returns the deadline of the oldest open stream,
// dropping the ids of ended streams from the front of the order.
func (c *conn) oldestDeadlineLocked() (time.Time, bool) {
	for len(c.order) > 0 {
		if s, ok := c.streams[c.order[0]]; ok {
			return s.deadline, true
		}
		c.order = c.order[1:]
	}
	return time.Time{}, false
}

// open opens as many streams as the limits allow. It reports how many it
// opened, whether the budget (or the stream ids) ran out, and a write
// error.
func (c *conn) open() (n int, spent bool, err error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	cfg := &c.cl.cfg
	c.writeDeadline()
	for {
		c.mu.Lock()
		if c.goAway || c.dead || len(c.streams) >= c.limitLocked() {
			c.mu.Unlock()
			break
		}
		if c.nextID > maxStreamID || !c.cl.take() {
			c.mu.Unlock()
			spent = true
			break
		}
		now := time.Now()
		s := &stream{id: c.nextID, start: now, deadline: now.Add(cfg.StreamTimeout), body: cfg.Body, sendWin: c.peerInitWin}
		c.nextID += 2
		c.streams[s.id] = s
		c.order = append(c.order, s.id)
		table := c.peerTable
		c.mu.Unlock()
		c.cl.add(&c.cl.counts.Sent)
		n++

		c.enc.SetMaxDynamicTableSizeLimit(table)
		c.encBuf.Reset()
		c.enc.WriteField(hpack.HeaderField{Name: ":method", Value: cfg.Method})
		c.enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: c.scheme()})
		c.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: cfg.Authority})
		c.enc.WriteField(hpack.HeaderField{Name: ":path", Value: cfg.Path})
		if len(cfg.Body) > 0 {
			c.enc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(cfg.Body))})
		}
		c.enc.WriteField(hpack.HeaderField{Name: "user-agent", Value: "h2count"})
		err = c.fr.WriteHeaders(http2.HeadersFrameParam{
			StreamID:      s.id,
			BlockFragment: c.encBuf.Bytes(),
			EndStream:     len(cfg.Body) == 0,
			EndHeaders:    true,
		})
		if err != nil {
			return n, spent, err
		}
	}
	if n > 0 {
		err = c.bw.Flush()
	}
	return n, spent, err
}

func (c *conn) scheme() string {
	if c.cl.cfg.TLS != nil {
		return "https"
	}
	return "http"
}

// pump sends the bodies of the open streams as far as the server's
// windows allow, oldest stream first.
func (c *conn) pump() error {
	if len(c.cl.cfg.Body) == 0 {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.writeDeadline()
	wrote := false
	c.mu.Lock()
	ids := append([]uint32(nil), c.order...)
	c.mu.Unlock()
	for _, id := range ids {
		for {
			c.mu.Lock()
			s, ok := c.streams[id]
			if !ok || len(s.body) == 0 {
				c.mu.Unlock()
				break
			}
			k := int(min(int64(len(s.body)), c.sendWin, s.sendWin, int64(c.peerMaxFrame)))
			if k <= 0 {
				c.mu.Unlock()
				break
			}
			c.sendWin -= int64(k)
			s.sendWin -= int64(k)
			chunk := s.body[:k]
			s.body = s.body[k:]
			end := len(s.body) == 0
			c.mu.Unlock()
			if err := c.fr.WriteData(id, end, chunk); err != nil {
				return err
			}
			wrote = true
		}
	}
	if wrote {
		return c.bw.Flush()
	}
	return nil
}

// reset writes RST_STREAM for ids.
func (c *conn) reset(ids []uint32, code http2.ErrCode) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.writeDeadline()
	for _, id := range ids {
		c.fr.WriteRSTStream(id, code)
	}
	c.bw.Flush() // an error ends the connection, which read sees
}

// write writes one frame with fn and flushes; errors are left to read,
// which sees the connection end.
func (c *conn) write(fn func() error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.writeDeadline()
	if fn() == nil {
		c.bw.Flush()
	}
}

// read handles the server's frames until the connection ends.
func (c *conn) read() {
	defer close(c.readDone)
	defer c.notify()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.mu.Lock()
				if s, ok := c.streams[se.StreamID]; ok {
					c.endLocked(s, Protocol, false, "%v", se)
				}
				c.unlock()
				c.reset([]uint32{se.StreamID}, se.Code)
				c.notify()
				continue
			}
			c.mu.Lock()
			c.dead, c.deadErr, c.deadCause = true, err, Closed
			var ce http2.ConnectionError
			if errors.As(err, &ce) || errors.Is(err, http2.ErrFrameTooLarge) {
				c.deadCause = Protocol
			}
			c.unlock()
			return
		}
		if err := c.handle(f); err != nil {
			c.mu.Lock()
			c.dead, c.deadErr, c.deadCause = true, err, Protocol
			c.unlock()
			return
		}
		c.notify()
	}
}

// handle handles one frame; an error ends the connection.
func (c *conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		c.headers(f)
	case *http2.DataFrame:
		c.data(f)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		if s, ok := c.streams[f.StreamID]; ok {
			c.endLocked(s, Reset, false, "RST_STREAM %v", f.ErrCode)
		}
		c.unlock()
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		return c.settingsFrame(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			data := f.Data
			c.write(func() error { return c.fr.WritePing(true, data) })
		}
	case *http2.GoAwayFrame:
		c.goAwayFrame(f)
	case *http2.WindowUpdateFrame:
		c.mu.Lock()
		if f.StreamID == 0 {
			c.sendWin += int64(f.Increment)
		} else if s, ok := c.streams[f.StreamID]; ok {
			s.sendWin += int64(f.Increment)
		}
		c.unlock()
	case *http2.PushPromiseFrame:
		return errors.New("PUSH_PROMISE although push is disabled")
	}
	return nil // PRIORITY, unknown types: ignored
}

// headers handles a response's HEADERS (or trailers).
func (c *conn) headers(f *http2.MetaHeadersFrame) {
	c.mu.Lock()
	s, ok := c.streams[f.StreamID]
	if !ok {
		c.unlock()
		return // a stream that already ended here (timed out, failed)
	}
	var bad string
	switch {
	case s.status == 0:
		code, err := strconv.Atoi(f.PseudoValue("status"))
		switch {
		case err != nil || code < 100 || code > 999:
			bad = fmt.Sprintf("HEADERS with :status %q", f.PseudoValue("status"))
		case code < 200 && f.StreamEnded():
			bad = fmt.Sprintf("informational status %d ends the stream", code)
		case code < 200:
			// 1xx: the final response is still to come
		default:
			s.status = code
		}
	case !f.StreamEnded():
		bad = "trailers without END_STREAM"
	}
	if bad != "" {
		c.endLocked(s, Protocol, false, "%s", bad)
		c.unlock()
		c.reset([]uint32{s.id}, http2.ErrCodeProtocol)
		return
	}
	if f.StreamEnded() && s.status != 0 {
		c.completeLocked(s)
	}
	c.unlock()
}

// completeLocked ends s, whose response is complete.
func (c *conn) completeLocked(s *stream) {
	if s.status >= 200 && s.status < 300 {
		c.endLocked(s, 0, true, "")
		return
	}
	c.endLocked(s, Status, false, "status %d", s.status)
}

// data handles a DATA frame and returns the flow-control windows.
func (c *conn) data(f *http2.DataFrame) {
	n := int(f.Length) // padding included: all of it counts
	var updates [][2]uint32
	var rst []uint32
	c.mu.Lock()
	c.recvUnacked += n
	if c.recvUnacked >= windowReturn {
		updates = append(updates, [2]uint32{0, uint32(c.recvUnacked)})
		c.recvUnacked = 0
	}
	if s, ok := c.streams[f.StreamID]; ok {
		switch {
		case s.status == 0:
			c.endLocked(s, Protocol, false, "DATA before the response's HEADERS")
			rst = append(rst, s.id)
		case f.StreamEnded():
			c.completeLocked(s)
		default:
			s.unacked += n
			if s.unacked >= windowReturn {
				updates = append(updates, [2]uint32{s.id, uint32(s.unacked)})
				s.unacked = 0
			}
		}
	}
	c.unlock()
	if len(rst) > 0 {
		c.reset(rst, http2.ErrCodeProtocol)
	}
	if len(updates) > 0 {
		c.write(func() error {
			for _, u := range updates {
				if err := c.fr.WriteWindowUpdate(u[0], u[1]); err != nil {
					return err
				}
			}
			return nil
		})
	}
}

// settingsFrame applies the server's SETTINGS and acknowledges them.
func (c *conn) settingsFrame(f *http2.SettingsFrame) error {
	c.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			c.peerMax = s.Val
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInitWin
			c.peerInitWin = int64(s.Val)
			for _, st := range c.streams {
				st.sendWin += delta
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = int(s.Val)
		case http2.SettingHeaderTableSize:
			c.peerTable = min(s.Val, 4096)
		}
		return nil
	})
	first := !c.gotSettings
	c.gotSettings = true
	c.unlock()
	if err != nil {
		return fmt.Errorf("server SETTINGS: %w", err)
	}
	c.write(c.fr.WriteSettingsAck)
	if first {
		close(c.settings)
	}
	return nil
}

// goAwayFrame stops new streams and fails the open ones above the last
// stream id. It runs before the next frame is read, so before the ACK of
// a PING the server sent after the GOAWAY is written.
func (c *conn) goAwayFrame(f *http2.GoAwayFrame) {
	c.cl.add(&c.cl.counts.GoAways)
	c.mu.Lock()
	if !c.goAway || f.LastStreamID < c.lastID {
		c.lastID = f.LastStreamID
	}
	c.goAway = true
	for _, id := range c.order {
		if s, ok := c.streams[id]; ok && id > c.lastID {
			c.endLocked(s, GoAwayAboveLast, false, "above the last stream id %d of a GOAWAY (%v)", c.lastID, f.ErrCode)
		}
	}
	c.unlock()
}
