package systemd_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// stopLine is the ExecStop= line every example unit and docs/systemd.md
// carry: systemd (254 at least) does not wait for a main process it did
// not start, so the unit sends SIGTERM itself and waits for the drain.
const stopLine = `ExecStop=/bin/sh -c 'kill -TERM "$MAINPID" 2>/dev/null && while kill -0 "$MAINPID" 2>/dev/null; do sleep 0.1; done; exit 0'`

// unitFile is a parsed unit file: the assignments of each section, in
// order (a key may be assigned more than once).
type unitFile map[string][][2]string

func parseUnit(text string) unitFile {
	u := unitFile{}
	section := ""
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
		default:
			k, v, _ := strings.Cut(line, "=")
			u[section] = append(u[section], [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
		}
	}
	return u
}

// values returns what key is assigned in section, in order.
func (u unitFile) values(section, key string) []string {
	var out []string
	for _, kv := range u[section] {
		if kv[0] == key {
			out = append(out, kv[1])
		}
	}
	return out
}

// last returns the value that counts for a key assigned once or more.
func (u unitFile) last(section, key string) string {
	v := u.values(section, key)
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// TestExampleUnits checks that every service unit of examples/systemd has
// the lines package systemd relies on. The Service cannot check them from
// inside (it sees its environment, not its unit), so this test does, and
// the real-systemd test runs these files.
func TestExampleUnits(t *testing.T) {
	dir := filepath.Join("..", "examples", "systemd")
	services, err := filepath.Glob(filepath.Join(dir, "*.service"))
	if err != nil {
		t.Fatal(err)
	}
	if len(services) < 4 {
		t.Fatalf("%d service units in %s, want at least 4", len(services), dir)
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "systemd.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), stopLine) {
		t.Errorf("docs/systemd.md lacks the ExecStop= line %s", stopLine)
	}
	for _, path := range services {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			u := parseUnit(string(b))
			if !strings.Contains(string(doc), name) {
				t.Errorf("docs/systemd.md does not mention %s", name)
			}
			want := func(key, value string) {
				t.Helper()
				if got := u.last("Service", key); got != value {
					t.Errorf("%s=%q, want %q", key, got, value)
				}
			}
			// notify, or the PID file fallback; never notify-reload, which
			// with ExecReload= would upgrade twice and without it cannot
			// fail a reload.
			switch typ := u.last("Service", "Type"); typ {
			case "notify":
				want("NotifyAccess", "main")
			case "simple":
				if u.last("Service", "PIDFile") == "" {
					t.Errorf("Type=simple without PIDFile=: systemd would lose the service at the first upgrade")
				}
			default:
				t.Errorf("Type=%q, want notify (or simple with PIDFile=)", typ)
			}
			want("KillMode", "control-group")
			if got := u.values("Service", "ExecReload"); len(got) != 1 ||
				!strings.HasPrefix(got[0], "/usr/local/bin/molt ") || !strings.HasSuffix(got[0], " upgrade") {
				t.Errorf("ExecReload=%q, want one line /usr/local/bin/molt ... upgrade", got)
			}
			if got := u.values("Service", "ExecStop"); len(got) != 1 || "ExecStop="+got[0] != stopLine {
				t.Errorf("ExecStop=%q, want %s", got, stopLine)
			}
			if u.last("Service", "TimeoutStopSec") == "" {
				t.Errorf("no TimeoutStopSec=: the stop's bound must be explicit")
			}
			want("TimeoutStopFailureMode", "kill")
			want("RuntimeDirectory", "%N")
			if !slices.Contains(u.values("Service", "Environment"), "MOLT_SOCKET=/run/%N/control.sock") {
				t.Errorf("no Environment=MOLT_SOCKET=/run/%%N/control.sock (for the service and molt upgrade)")
			}
			if got := u.last("Service", "ExecStart"); !strings.HasPrefix(got, "/usr/local/bin/molt-systemd-example") {
				t.Errorf("ExecStart=%q, want the example binary", got)
			}
		})
	}
}
