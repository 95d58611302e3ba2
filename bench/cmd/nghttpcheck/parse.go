package main

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// The lines of `nghttp -v` (nghttp2 1.52) that the parser reads. Each
// starts with the time since the run began, "[  0.116] ", then:
//
//	send HEADERS frame <length=39, flags=0x25, stream_id=13>
//	recv (stream_id=13) :status: 200
//	recv HEADERS frame <length=48, flags=0x04, stream_id=13>
//	recv DATA frame <length=2, flags=0x01, stream_id=13>
//	recv RST_STREAM frame <length=4, flags=0x00, stream_id=13>
//	recv GOAWAY frame <length=8, flags=0x00, stream_id=0>
//
// A frame's details follow on lines indented by ten spaces: for RST_STREAM
// "(error_code=REFUSED_STREAM(0x07))", for GOAWAY "(last_stream_id=13,
// error_code=NO_ERROR(0x00), opaque_data(0)=[])". Every other line (the
// frames' other details, "Connected", TLS and ALPN lines) is skipped.
const (
	// flagEndStream is END_STREAM in the flags of HEADERS and DATA
	// (RFC 9113 §6.1, §6.2): the peer's last frame on the stream.
	flagEndStream = 0x01
	// detailIndent starts a line that details the frame above it.
	detailIndent = "          "
)

// stream is what one run's output says about one stream the client opened.
type stream struct {
	id      uint32
	status  int    // the response's :status, 0 if none was received
	headers bool   // a response HEADERS frame was received
	ended   bool   // a HEADERS or DATA frame with END_STREAM was received
	reset   string // the error code of a received RST_STREAM, "" if none
}

// answered reports whether the stream got a complete response: the
// server's side of it ended with END_STREAM. A RST_STREAM without that
// (whatever its code) leaves the request unanswered.
func (s *stream) answered() bool { return s.ended }

// goaway is a GOAWAY frame the client received.
type goaway struct {
	lastStreamID uint32
	errorCode    string
}

// runLog is what one nghttp run's -v output says: every stream whose
// HEADERS frame it sent, and what came back.
type runLog struct {
	streams map[uint32]*stream
	sent    []uint32 // stream ids in the order their HEADERS were sent
	goaways []goaway // received, in order
	lines   int      // lines read, to tell an empty output from a strange one

	// onAnswer, if set, is called after each stream's complete response;
	// the driver uses the first call to learn that the run is under way.
	onAnswer func()
	answers  int
	// pending is the frame whose detail lines may follow.
	pending struct {
		kind string // "RST_STREAM", "GOAWAY" or ""
		id   uint32
	}
}

func newRunLog() *runLog { return &runLog{streams: map[uint32]*stream{}} }

// parse reads a whole -v output.
func parse(r io.Reader) (*runLog, error) {
	l := newRunLog()
	return l, l.read(r)
}

// read parses lines from r until end-of-file.
func (l *runLog) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	// Header values and opaque data can make long lines; no frame this
	// check sees comes near this.
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if err := l.line(sc.Text()); err != nil {
			return err
		}
	}
	return sc.Err()
}

// line parses one line of output. It fails only on a line in one of the
// forms it reads whose fields do not parse: a different output format must
// not pass for a run without streams.
func (l *runLog) line(s string) error {
	l.lines++
	if strings.HasPrefix(s, detailIndent) {
		return l.detail(strings.TrimSpace(s))
	}
	l.pending.kind = ""
	rest, ok := strings.CutPrefix(s, "[")
	if !ok {
		return nil
	}
	_, rest, ok = strings.Cut(rest, "] ")
	if !ok {
		return nil
	}
	dir, rest, ok := strings.Cut(rest, " ")
	if !ok || (dir != "send" && dir != "recv") {
		return nil
	}
	if h, ok := strings.CutPrefix(rest, "(stream_id="); ok {
		if dir == "recv" {
			return l.header(h)
		}
		return nil
	}
	kind, rest, ok := strings.Cut(rest, " frame <")
	if !ok {
		return nil
	}
	flags, id, err := frameFields(strings.TrimSuffix(rest, ">"))
	if err != nil {
		return fmt.Errorf("%w in %q", err, s)
	}
	if dir == "send" {
		if kind == "HEADERS" {
			l.sentHeaders(id)
		}
		return nil
	}
	switch kind {
	case "HEADERS", "DATA":
		st := l.streams[id]
		if st == nil {
			return nil // not a stream this client opened (a pushed one)
		}
		if kind == "HEADERS" {
			st.headers = true
		}
		if flags&flagEndStream != 0 && !st.ended {
			st.ended = true
			l.answers++
			if l.onAnswer != nil {
				l.onAnswer()
			}
		}
	case "RST_STREAM", "GOAWAY":
		l.pending.kind, l.pending.id = kind, id
	}
	return nil
}

// sentHeaders books a HEADERS frame the client sent: the first one on a
// stream opens it (a later one would carry trailers).
func (l *runLog) sentHeaders(id uint32) {
	if _, ok := l.streams[id]; ok {
		return
	}
	l.streams[id] = &stream{id: id}
	l.sent = append(l.sent, id)
}

// header reads "13) :status: 200", a header field of a received response.
func (l *runLog) header(s string) error {
	idText, field, ok := strings.Cut(s, ") ")
	if !ok {
		return fmt.Errorf("header line %q: no stream id", s)
	}
	id, err := strconv.ParseUint(idText, 10, 31)
	if err != nil {
		return fmt.Errorf("header line %q: stream id: %w", s, err)
	}
	v, ok := strings.CutPrefix(field, ":status: ")
	if !ok {
		return nil
	}
	code, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("header line %q: status: %w", s, err)
	}
	if st := l.streams[uint32(id)]; st != nil {
		st.status = code
	}
	return nil
}

// detail reads the line that details a received RST_STREAM or GOAWAY.
func (l *runLog) detail(s string) error {
	kind := l.pending.kind
	l.pending.kind = "" // the first detail line is the one with the fields
	if kind == "" {
		return nil
	}
	fields, err := parenFields(s)
	if err != nil {
		return fmt.Errorf("%s detail %q: %w", kind, s, err)
	}
	code := fields["error_code"]
	if code == "" {
		return fmt.Errorf("%s detail %q: no error_code", kind, s)
	}
	if kind == "RST_STREAM" {
		if st := l.streams[l.pending.id]; st != nil && st.reset == "" {
			st.reset = code
		}
		return nil
	}
	last, err := strconv.ParseUint(fields["last_stream_id"], 10, 31)
	if err != nil {
		return fmt.Errorf("GOAWAY detail %q: last_stream_id: %w", s, err)
	}
	l.goaways = append(l.goaways, goaway{lastStreamID: uint32(last), errorCode: code})
	return nil
}

// frameFields reads the flags and the stream id of
// "length=39, flags=0x25, stream_id=13".
func frameFields(s string) (flags uint8, id uint32, err error) {
	var haveFlags, haveID bool
	for f := range strings.SplitSeq(s, ", ") {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "flags":
			n, err := strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 8)
			if err != nil {
				return 0, 0, fmt.Errorf("frame flags %q: %w", v, err)
			}
			flags, haveFlags = uint8(n), true
		case "stream_id":
			n, err := strconv.ParseUint(v, 10, 31)
			if err != nil {
				return 0, 0, fmt.Errorf("frame stream_id %q: %w", v, err)
			}
			id, haveID = uint32(n), true
		}
	}
	if !haveFlags || !haveID {
		return 0, 0, fmt.Errorf("frame fields %q: want flags and stream_id", s)
	}
	return flags, id, nil
}

// parenFields reads "(last_stream_id=13, error_code=NO_ERROR(0x00),
// opaque_data(0)=[])" into its key=value pairs.
func parenFields(s string) (map[string]string, error) {
	inner, ok := strings.CutPrefix(s, "(")
	if !ok || !strings.HasSuffix(inner, ")") {
		return nil, fmt.Errorf("not in parentheses")
	}
	out := map[string]string{}
	for f := range strings.SplitSeq(strings.TrimSuffix(inner, ")"), ", ") {
		if k, v, ok := strings.Cut(f, "="); ok {
			out[k] = v
		}
	}
	return out, nil
}

// verdict sums up one run.
type verdict struct {
	sent       int      // streams whose HEADERS were sent
	answered   int      // of those, with a complete response
	unanswered []string // one description per unanswered stream, in send order
	non200     []string // answered, but not with status 200
	above      int      // unanswered streams above a GOAWAY's last stream id
	resets     int      // streams that received RST_STREAM, answered or not
	goaways    []goaway // received, in order
}

// judge decides, for every stream whose HEADERS the client sent, whether
// it was answered, and describes each one that was not.
func (l *runLog) judge() verdict {
	v := verdict{sent: len(l.sent), goaways: slices.Clone(l.goaways)}
	for _, id := range l.sent {
		st := l.streams[id]
		if st.reset != "" {
			v.resets++
		}
		if st.answered() {
			v.answered++
			if st.status != 200 {
				v.non200 = append(v.non200, fmt.Sprintf("stream %d: status %d", id, st.status))
			}
			continue
		}
		what, above := l.describeUnanswered(st)
		v.unanswered = append(v.unanswered, what)
		if above {
			v.above++
		}
	}
	return v
}

// describeUnanswered says what is known of a stream without a complete
// response, and whether it is above a GOAWAY's last stream id.
func (l *runLog) describeUnanswered(st *stream) (string, bool) {
	var what []string
	switch {
	case st.headers:
		what = append(what, fmt.Sprintf("response headers (status %d) but no END_STREAM", st.status))
	default:
		what = append(what, "no response at all")
	}
	if st.reset != "" {
		what = append(what, "RST_STREAM "+st.reset)
	}
	// A stream above a GOAWAY's last stream id is one the server says it
	// never processed: a client that does not retry loses it.
	i := slices.IndexFunc(l.goaways, func(g goaway) bool { return st.id > g.lastStreamID })
	if i >= 0 {
		what = append(what, fmt.Sprintf("above GOAWAY last_stream_id=%d", l.goaways[i].lastStreamID))
	}
	return fmt.Sprintf("stream %d: %s", st.id, strings.Join(what, "; ")), i >= 0
}
