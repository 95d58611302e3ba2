package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func parseSample(t *testing.T, name string) verdict {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := parse(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return l.judge()
}

func stderrSample(t *testing.T, name string) stderrLog {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var e stderrLog
	for l := range strings.Lines(string(b)) {
		e.line(strings.TrimSuffix(l, "\n"))
	}
	return e
}

func lastStreamIDs(v verdict) []uint32 {
	var ids []uint32
	for _, g := range v.goaways {
		ids = append(ids, g.lastStreamID)
	}
	return ids
}

func TestParseSamples(t *testing.T) {
	for _, tc := range []struct {
		file       string
		sent       int
		answered   int
		unanswered []string
		non200     []string
		resets     int
		above      int
		goaways    []uint32
	}{
		{file: "complete.stdout", sent: 3, answered: 3},
		{
			file: "mixed.stdout", sent: 6, answered: 4, resets: 2,
			unanswered: []string{
				"stream 21: no response at all; RST_STREAM INTERNAL_ERROR(0x02)",
				"stream 23: no response at all; RST_STREAM INTERNAL_ERROR(0x02)",
			},
			non200: []string{"stream 17: status 404", "stream 19: status 404"},
		},
		{
			// The failure this check exists for: streams whose HEADERS
			// were sent before the GOAWAY, above its last stream id,
			// never answered.
			file: "cut-h2c.stdout", sent: 8, answered: 6, above: 2, goaways: []uint32{1391},
			unanswered: []string{
				"stream 1393: no response at all; above GOAWAY last_stream_id=1391",
				"stream 1395: no response at all; above GOAWAY last_stream_id=1391",
			},
		},
		{
			file: "cut-tls.stdout", sent: 8, answered: 6, above: 2, goaways: []uint32{861},
			unanswered: []string{
				"stream 863: no response at all; above GOAWAY last_stream_id=861",
				"stream 865: no response at all; above GOAWAY last_stream_id=861",
			},
		},
		{
			// Two GOAWAYs: only the second one's last stream id refuses
			// streams.
			file: "cut-twophase-h2c.stdout", sent: 6, answered: 4, above: 2, goaways: []uint32{1<<31 - 1, 2241},
			unanswered: []string{
				"stream 2243: no response at all; above GOAWAY last_stream_id=2241",
				"stream 2245: no response at all; above GOAWAY last_stream_id=2241",
			},
		},
	} {
		t.Run(tc.file, func(t *testing.T) {
			v := parseSample(t, tc.file)
			if v.sent != tc.sent || v.answered != tc.answered || v.resets != tc.resets || v.above != tc.above {
				t.Errorf("sent %d, answered %d, resets %d, above a GOAWAY %d; want %d, %d, %d, %d",
					v.sent, v.answered, v.resets, v.above, tc.sent, tc.answered, tc.resets, tc.above)
			}
			if !slices.Equal(v.unanswered, tc.unanswered) {
				t.Errorf("unanswered:\n%s\nwant:\n%s", strings.Join(v.unanswered, "\n"), strings.Join(tc.unanswered, "\n"))
			}
			if !slices.Equal(v.non200, tc.non200) {
				t.Errorf("non-200: %q, want %q", v.non200, tc.non200)
			}
			if got := lastStreamIDs(v); !slices.Equal(got, tc.goaways) {
				t.Errorf("GOAWAY last stream ids %v, want %v", got, tc.goaways)
			}
		})
	}
}

// TestOutcome checks the run's verdict against nghttp's own account on
// the unabridged samples, and that a failure nghttp reports only on
// standard error (it exits 0 even when it could not connect) fails the run.
func TestOutcome(t *testing.T) {
	const noGOAWAY = "no GOAWAY received: the run ended before the upgrade reached it (raise -m)"
	for _, tc := range []struct {
		name, out, err string
		streams        int
		want           []string
	}{
		{name: "all answered", out: "complete.stdout", streams: 3, want: []string{noGOAWAY}},
		{name: "resets counted by nghttp too", out: "mixed.stdout", err: "mixed.stderr", streams: 6, want: []string{noGOAWAY}},
		{
			name: "accounts differ", out: "mixed.stdout", err: "mixed.stderr", streams: 7,
			want: []string{
				"nghttp's account (total=6, processed=4, 0 never sent) does not match -m 7 and the parser's (6 sent, 4 answered)",
				noGOAWAY,
			},
		},
		{
			name: "not connected", err: "refused.stderr", streams: 1,
			want: []string{
				"nghttp's account (total=1, processed=0, 0 never sent) does not match -m 1 and the parser's (0 sent, 0 answered)",
				"nghttp's standard error: [ERROR] Could not connect to the address 127.0.0.1",
				"no stream's HEADERS were sent (or the output's format is not the one the parser knows)",
				noGOAWAY,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ru := &run{proto: "h2c"}
			var v verdict
			if tc.out != "" {
				v = parseSample(t, tc.out)
			}
			if tc.err != "" {
				ru.stderr = stderrSample(t, tc.err)
			}
			if got := ru.outcome("exit status 0", tc.streams, v); !slices.Equal(got, tc.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if got := ru.outcome("exit status 2", tc.streams, v); len(got) == 0 || got[0] != "nghttp ended with exit status 2" {
				t.Errorf("exit status 2: problems %q", got)
			}
		})
	}
}

func TestStderrCut(t *testing.T) {
	e := stderrSample(t, "cut-tls.stderr")
	want := stderrLog{summary: true, total: 20000, processed: 425, notSent: 3, certWarnings: 1}
	if e.summary != want.summary || e.total != want.total || e.processed != want.processed ||
		e.notSent != want.notSent || e.certWarnings != want.certWarnings || len(e.unexpected) != 0 {
		t.Errorf("got %+v, want %+v", e, want)
	}
	ru := &run{proto: "h2c", stderr: e}
	if got := ru.outcome("exit status 0", 20000, verdict{}); !slices.Contains(got, "a certificate warning on a cleartext run") {
		t.Errorf("a certificate warning on h2c not reported: %q", got)
	}
}

func TestParseRejectsMalformedFrame(t *testing.T) {
	l := newRunLog()
	for _, s := range []string{
		"[  0.001] send HEADERS frame <length=12, flags=0xzz, stream_id=13>",
		"[  0.001] recv DATA frame <length=12, stream_id=13>",
		"[  0.001] recv (stream_id=x) :status: 200",
	} {
		if err := l.line(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
	l.line("[  0.001] recv GOAWAY frame <length=8, flags=0x00, stream_id=0>")
	if err := l.line("          (last_stream_id=, error_code=NO_ERROR(0x00), opaque_data(0)=[])"); err == nil {
		t.Error("GOAWAY without a last stream id: no error")
	}
}
