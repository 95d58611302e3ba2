package control

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// lineHandler records the log lines of refusals.
type lineHandler struct {
	mu    sync.Mutex
	lines []map[string]any
	added chan struct{}
}

func (h *lineHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *lineHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *lineHandler) WithGroup(string) slog.Handler            { return h }
func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	m := map[string]any{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.Any(); return true })
	h.mu.Lock()
	h.lines = append(h.lines, m)
	h.mu.Unlock()
	select {
	case h.added <- struct{}{}:
	default:
	}
	return nil
}

func (h *lineHandler) snapshot() []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]any(nil), h.lines...)
}

// TestRefusalsRateLimited: a flood of refusals from one user is one line
// at once and one per interval after, with the count; each user and reason
// is counted apart; close reports what is left.
func TestRefusalsRateLimited(t *testing.T) {
	h := &lineHandler{added: make(chan struct{}, 1)}
	r := newRefusals(slog.New(h), time.Hour) // no interval ends in this test
	for i := range 1000 {
		r.note(peer{pid: i, uid: 1001, gid: 1001}, CodePermissionDenied, "permission denied: peer uid 1001 is not allowed")
	}
	r.note(peer{pid: 1, uid: 1002, gid: 1002}, CodePermissionDenied, "denied 1002")
	r.note(peer{pid: 2, uid: 1001, gid: 1001}, CodeBusy, "busy 1001")
	if got := len(h.snapshot()); got != 3 {
		t.Fatalf("%d lines after 1,002 refusals of three keys, want 3 (one each, at once)", got)
	}
	r.close()
	r.note(peer{uid: 1003}, CodeBusy, "after close") // not logged
	lines := h.snapshot()
	if len(lines) != 4 {
		t.Fatalf("%d lines after close, want 4: %v", len(lines), lines)
	}
	last := lines[3]
	if last["refused"] != int64(999) || last["peer_uid"] != int64(1001) || last["code"] != "permission_denied" || last["peer_pid"] != int64(999) {
		t.Errorf("close logged %v; want the 999 later refusals of uid 1001, with the last peer", last)
	}
}

// TestRefusalsInterval: at the end of an interval the count is logged and
// a new interval begins; an interval without refusals forgets the key.
func TestRefusalsInterval(t *testing.T) {
	h := &lineHandler{added: make(chan struct{}, 1)}
	r := newRefusals(slog.New(h), 20*time.Millisecond)
	defer r.close()
	p := peer{pid: 7, uid: 1001, gid: 1001}
	for range 5 {
		r.note(p, CodeBusy, "busy")
	}
	deadline := time.After(time.Minute)
	for len(h.snapshot()) < 2 {
		select {
		case <-h.added:
		case <-deadline:
			t.Fatalf("no line for the interval within a minute: %v", h.snapshot())
		}
	}
	if l := h.snapshot()[1]; l["refused"] != int64(4) {
		t.Errorf("the interval's line: %v, want refused=4", l)
	}
}

// TestRefusalsForget: an interval without refusals forgets the key, so
// the next refusal is logged at once. The intervals are ended by hand.
func TestRefusalsForget(t *testing.T) {
	h := &lineHandler{added: make(chan struct{}, 1)}
	r := newRefusals(slog.New(h), time.Hour)
	defer r.close()
	p, k := peer{pid: 7, uid: 1001, gid: 1001}, refusalKey{uid: 1001, code: CodeBusy}
	r.note(p, CodeBusy, "busy")
	r.note(p, CodeBusy, "busy")
	r.tick(k) // logs the second
	r.tick(k) // quiet: forgets
	r.note(p, CodeBusy, "busy")
	lines := h.snapshot()
	if len(lines) != 3 || lines[1]["refused"] != int64(1) || lines[2]["refused"] != int64(1) {
		t.Errorf("lines %v; want the first, the interval's (refused=1), and the next at once (refused=1)", lines)
	}
}

func TestLineReader(t *testing.T) {
	chunks := []string{"{\"a\"", ":1}\n\n{\"b\":2}\n{\"c", "\"}"}
	var lr lineReader
	var got []string
	for _, c := range chunks {
		lr.fill(func(p []byte) (int, error) { return copy(p, c), nil })
		for {
			line, ok := lr.next()
			if !ok {
				break
			}
			got = append(got, string(line))
		}
	}
	want := []string{"{\"a\":1}\n", "\n", "{\"b\":2}\n"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("lines %q, want %q", got, want)
	}
	if rest := string(lr.rest()); rest != `{"c"}` {
		t.Errorf("rest %q", rest)
	}
	lr = lineReader{}
	for !lr.full() {
		if lr.fill(func(p []byte) (int, error) { return copy(p, "xxxxxxxx"), nil }); lr.buffered() > MaxRequestSize {
			t.Fatal("buffered more than MaxRequestSize")
		}
	}
	if _, ok := lr.next(); ok || lr.buffered() != MaxRequestSize {
		t.Errorf("a full buffer without newline: buffered %d", lr.buffered())
	}
}
