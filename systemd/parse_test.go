package systemd

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestListenEnvParse(t *testing.T) {
	const self = 4242
	unknown2 := []string{"unknown", "unknown"}
	for _, tc := range []struct {
		name string
		env  listenEnv
		want []string // nil: nothing for this process
		err  bool
	}{
		{"nothing", listenEnv{}, nil, false},
		{"no LISTEN_PID", listenEnv{fds: "2"}, nil, false},
		{"another process", listenEnv{pid: "1", fds: "2", names: "a:b", hasNames: true}, nil, false},
		{"another process, bad LISTEN_FDS ignored", listenEnv{pid: "1", fds: "abc"}, nil, false},
		{"two, unnamed", listenEnv{pid: "4242", fds: "2"}, unknown2, false},
		{"two, named", listenEnv{pid: "4242", fds: "2", names: "web:admin", hasNames: true}, []string{"web", "admin"}, false},
		{"same name twice", listenEnv{pid: "4242", fds: "2", names: "x:x", hasNames: true}, []string{"x", "x"}, false},
		{"zero", listenEnv{pid: "4242", fds: "0"}, []string{}, false},
		{"zero, empty names", listenEnv{pid: "4242", fds: "0", names: "", hasNames: true}, []string{}, false},
		{"name with space", listenEnv{pid: "4242", fds: "1", names: "my socket", hasNames: true}, []string{"my socket"}, false},

		{"LISTEN_PID not a number", listenEnv{pid: "abc", fds: "1"}, nil, true},
		{"LISTEN_PID zero", listenEnv{pid: "0", fds: "1"}, nil, true},
		{"LISTEN_PID negative", listenEnv{pid: "-4242", fds: "1"}, nil, true},
		{"LISTEN_PID with sign", listenEnv{pid: "+4242", fds: "1"}, nil, true},
		{"LISTEN_PID with space", listenEnv{pid: " 4242", fds: "1"}, nil, true},
		{"LISTEN_PID huge", listenEnv{pid: "99999999999999999999999", fds: "1"}, nil, true},
		{"LISTEN_FDS missing", listenEnv{pid: "4242"}, nil, true},
		{"LISTEN_FDS=abc", listenEnv{pid: "4242", fds: "abc"}, nil, true},
		{"LISTEN_FDS negative", listenEnv{pid: "4242", fds: "-1"}, nil, true},
		{"LISTEN_FDS hex", listenEnv{pid: "4242", fds: "0x2"}, nil, true},
		{"LISTEN_FDS too many", listenEnv{pid: "4242", fds: "65537"}, nil, true},
		{"LISTEN_FDS overflow", listenEnv{pid: "4242", fds: "9223372036854775808"}, nil, true},
		{"fewer names", listenEnv{pid: "4242", fds: "2", names: "web", hasNames: true}, nil, true},
		{"more names", listenEnv{pid: "4242", fds: "1", names: "web:admin", hasNames: true}, nil, true},
		{"names for zero", listenEnv{pid: "4242", fds: "0", names: "web", hasNames: true}, nil, true},
		{"empty name", listenEnv{pid: "4242", fds: "2", names: "web:", hasNames: true}, nil, true},
		{"empty names for one", listenEnv{pid: "4242", fds: "1", names: "", hasNames: true}, nil, true},
		{"control character", listenEnv{pid: "4242", fds: "1", names: "we\nb", hasNames: true}, nil, true},
		{"non-ASCII", listenEnv{pid: "4242", fds: "1", names: "wéb", hasNames: true}, nil, true},
		{"name too long", listenEnv{pid: "4242", fds: "1", names: strings.Repeat("n", 256), hasNames: true}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.env.parse(self)
			if tc.err {
				if !errors.Is(err, ErrInvalidEnv) {
					t.Errorf("parse(%+v) = %q, %v; want an error wrapping ErrInvalidEnv", tc.env, got, err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Errorf("parse(%+v) = %q, %v; want %q", tc.env, got, err, tc.want)
			}
		})
	}
}

// The error names the variable at fault.
func TestListenEnvErrorNamesVariable(t *testing.T) {
	for env, variable := range map[listenEnv]string{
		{pid: "x", fds: "1"}:                                 "LISTEN_PID",
		{pid: "7", fds: "x"}:                                 "LISTEN_FDS",
		{pid: "7", fds: "2", names: "a", hasNames: true}:     "LISTEN_FDNAMES",
		{pid: "7", fds: "1", names: "a\x01", hasNames: true}: "LISTEN_FDNAMES",
	} {
		if _, err := env.parse(7); err == nil || !strings.Contains(err.Error(), variable) {
			t.Errorf("parse(%+v) = %v, want an error naming %s", env, err, variable)
		}
	}
}

func FuzzListenEnv(f *testing.F) {
	f.Add("4242", "2", "web:admin", true)
	f.Add("4242", "0", "", true)
	f.Add("4242", "3", "", false)
	f.Add("1", "2", "a:b", true)
	f.Add("4242", "abc", "", false)
	f.Add("4242", "-1", "", false)
	f.Add("4242", "2", "a::b", true)
	f.Add("4242", "65536", "", false)
	f.Add("04242", "1", "x", true)
	f.Fuzz(func(t *testing.T, pid, fds, names string, hasNames bool) {
		e := listenEnv{pid: pid, fds: fds, names: names, hasNames: hasNames}
		got, err := e.parse(4242)
		if err != nil {
			if !errors.Is(err, ErrInvalidEnv) || got != nil {
				t.Fatalf("parse(%+v) = %q, %v: errors must wrap ErrInvalidEnv and return nothing", e, got, err)
			}
			return
		}
		if got == nil {
			return
		}
		if len(got) > maxListenFDs {
			t.Fatalf("parse(%+v): %d descriptors", e, len(got))
		}
		for _, name := range got {
			if !validFDName(name) {
				t.Fatalf("parse(%+v) returned the invalid name %q", e, name)
			}
		}
		if hasNames && len(got) > 0 && strings.Join(got, ":") != names {
			t.Fatalf("parse(%+v) = %q, which does not join to LISTEN_FDNAMES", e, got)
		}
	})
}

func TestWatchdogEnvParse(t *testing.T) {
	const self, parent = 100, 99
	for _, tc := range []struct {
		name  string
		env   watchdogEnv
		gen1  time.Duration // parse(self, 0)
		later time.Duration // parse(self, parent)
		err   bool
	}{
		{"unset", watchdogEnv{}, 0, 0, false},
		{"no pid", watchdogEnv{usec: "3000000"}, 3 * time.Second, 3 * time.Second, false},
		{"this process", watchdogEnv{usec: "3000000", pid: "100"}, 3 * time.Second, 3 * time.Second, false},
		{"the parent generation", watchdogEnv{usec: "500", pid: "99"}, 0, 500 * time.Microsecond, false},
		{"another process", watchdogEnv{usec: "3000000", pid: "7"}, 0, 0, false},
		{"usec zero", watchdogEnv{usec: "0"}, 0, 0, true},
		{"usec not a number", watchdogEnv{usec: "3s"}, 0, 0, true},
		{"usec negative", watchdogEnv{usec: "-1"}, 0, 0, true},
		{"usec overflows a Duration", watchdogEnv{usec: "9223372036854776"}, 0, 0, true},
		{"pid not a number", watchdogEnv{usec: "1", pid: "self"}, 0, 0, true},
		{"pid zero", watchdogEnv{usec: "1", pid: "0"}, 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d1, err1 := tc.env.parse(self, 0)
			d2, err2 := tc.env.parse(self, parent)
			if tc.err {
				if !errors.Is(err1, ErrInvalidEnv) || !errors.Is(err2, ErrInvalidEnv) {
					t.Errorf("parse(%+v) = %v, %v; want ErrInvalidEnv", tc.env, err1, err2)
				}
				return
			}
			if err1 != nil || err2 != nil || d1 != tc.gen1 || d2 != tc.later {
				t.Errorf("parse(%+v) = %v, %v (generation 1) and %v, %v (later); want %v and %v",
					tc.env, d1, err1, d2, err2, tc.gen1, tc.later)
			}
		})
	}
	if got := pingInterval(3 * time.Second); got != 1500*time.Millisecond {
		t.Errorf("pingInterval(3s) = %v, want 1.5s", got)
	}
	if got := pingInterval(time.Microsecond); got != time.Millisecond {
		t.Errorf("pingInterval(1µs) = %v, want the 1ms floor", got)
	}
}

func TestParseNotifySocket(t *testing.T) {
	for _, tc := range []struct {
		value string
		err   error
	}{
		{"/run/systemd/notify", nil},
		{"@systemd-notify", nil},
		{"", ErrNoNotifySocket},
		{"relative/path", ErrInvalidEnv},
		{"vsock:2:1234", ErrInvalidEnv},
		{"/with\x00nul", ErrInvalidEnv},
		{"@", ErrInvalidEnv},
		{"/" + strings.Repeat("p", 106), nil},
		{"/" + strings.Repeat("p", 107), ErrInvalidEnv},
		{"@" + strings.Repeat("a", 107), nil},
		{"@" + strings.Repeat("a", 108), ErrInvalidEnv},
	} {
		got, err := parseNotifySocket(tc.value)
		if !errors.Is(err, tc.err) || (err == nil && got != tc.value) {
			t.Errorf("parseNotifySocket(%q) = %q, %v; want %v", tc.value, got, err, tc.err)
		}
	}
}

func TestStatus(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"serving", "STATUS=serving"},
		{"two\nlines\r\tand tab", "STATUS=two lines  and tab"},
		{"bad \xff utf8", "STATUS=bad \uFFFD utf8"},
	} {
		if got := Status(tc.in).String(); got != tc.want {
			t.Errorf("Status(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := Status(strings.Repeat("é", 1000)).value // 2000 bytes
	if len(long) > maxStatus || !utf8.ValidString(long) || !strings.HasSuffix(long, "…") {
		t.Errorf("Status of 2000 bytes = %d bytes, valid UTF-8 %t, want at most %d, valid, ending in …",
			len(long), utf8.ValidString(long), maxStatus)
	}
}

func TestAssignments(t *testing.T) {
	for _, tc := range []struct {
		a       Assignment
		want    string
		invalid bool
	}{
		{Ready, "READY=1", false},
		{Reloading, "RELOADING=1", false},
		{Stopping, "STOPPING=1", false},
		{WatchdogPing, "WATCHDOG=1", false},
		{MainPID(42), "MAINPID=42", false},
		{MainPID(0), "MAINPID=0", true},
		{ExtendTimeout(90 * time.Second), "EXTEND_TIMEOUT_USEC=90000000", false},
		{ExtendTimeout(1500 * time.Nanosecond), "EXTEND_TIMEOUT_USEC=2", false},
		{ExtendTimeout(-time.Second), "EXTEND_TIMEOUT_USEC=0", true},
		{ExtendTimeout(0), "EXTEND_TIMEOUT_USEC=0", true},
	} {
		if got := tc.a.String(); got != tc.want || (tc.a.invalid != "") != tc.invalid {
			t.Errorf("%#v: String() = %q, invalid %q; want %q, invalid %t", tc.a, got, tc.a.invalid, tc.want, tc.invalid)
		}
	}
}

func TestEncode(t *testing.T) {
	b, err := encode([]Assignment{MainPID(7), Reloading, Ready})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) != 4 || lines[0] != "MAINPID=7" || lines[1] != "RELOADING=1" ||
		!strings.HasPrefix(lines[2], "MONOTONIC_USEC=") || lines[3] != "READY=1" {
		t.Errorf("encode = %q, want MAINPID, RELOADING, MONOTONIC_USEC, READY", b)
	}
	b, err = encode([]Assignment{Reloading, monotonicUsec(5 * time.Microsecond)})
	if err != nil || string(b) != "RELOADING=1\nMONOTONIC_USEC=5" {
		t.Errorf("encode with MONOTONIC_USEC given = %q, %v; want it kept, not added", b, err)
	}
	if b, err := encode(nil); b != nil || err != nil {
		t.Errorf("encode(nil) = %q, %v; want nothing", b, err)
	}
}

func TestCheckAddr(t *testing.T) {
	tcp := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }
	udp := func(s string) net.Addr { a, _ := net.ResolveUDPAddr("udp", s); return a }
	unix := func(name, network string) net.Addr { return &net.UnixAddr{Name: name, Net: network} }
	for _, tc := range []struct {
		got           net.Addr
		network, addr string
		ok            bool
	}{
		{tcp("[::]:8080"), "tcp", ":8080", true},
		{tcp("0.0.0.0:8080"), "tcp", ":8080", true},
		{tcp("[::]:8080"), "tcp4", "0.0.0.0:8080", true},
		{tcp("127.0.0.1:8080"), "tcp", "127.0.0.1:8080", true},
		{tcp("127.0.0.1:8080"), "tcp", "localhost:8080", true},
		{tcp("127.0.0.1:41000"), "tcp", "127.0.0.1:0", true},
		{tcp("127.0.0.1:8080"), "tcp", "127.0.0.1:8081", false},
		{tcp("127.0.0.1:8080"), "tcp", ":8080", false},
		{tcp("[::]:8080"), "tcp", "127.0.0.1:8080", false},
		{tcp("127.0.0.1:8080"), "udp", "127.0.0.1:8080", false},
		{udp("[::]:53"), "udp", ":53", true},
		{udp("127.0.0.1:53"), "udp", "127.0.0.2:53", false},
		{unix("/run/svc.sock", "unix"), "unix", "/run/svc.sock", true},
		{unix("/run/svc.sock", "unix"), "unix", "/run/./svc.sock", true},
		{unix("/run/svc.sock", "unix"), "unix", "/run/other.sock", false},
		{unix("/run/svc.sock", "unixpacket"), "unix", "/run/svc.sock", false},
		{unix("@svc", "unix"), "unix", "@svc", true},
		{unix("@svc", "unix"), "unix", "@other", false},
		{tcp("127.0.0.1:8080"), "unix", "/run/svc.sock", false},
	} {
		err := checkAddr(tc.got, tc.network, tc.addr)
		if ok := err == nil; ok != tc.ok || (!ok && !errors.Is(err, ErrAddrMismatch)) {
			t.Errorf("checkAddr(%s %s, %s %s) = %v, want ok %t", tc.got.Network(), tc.got, tc.network, tc.addr, err, tc.ok)
		}
	}
	if err := checkAddr(tcp("127.0.0.1:1"), "sctp", "x"); err == nil || errors.Is(err, ErrAddrMismatch) {
		t.Errorf("checkAddr with an unsupported network = %v, want an error of its own", err)
	}
}

func TestValidFDName(t *testing.T) {
	for name, want := range map[string]bool{
		"http": true, "my socket": true, "a.b-c_d~": true, strings.Repeat("n", 255): true,
		"": false, "a:b": false, "tab\t": false, "del\x7f": false, "é": false, strings.Repeat("n", 256): false,
	} {
		if got := validFDName(name); got != want {
			t.Errorf("validFDName(%q) = %t, want %t", name, got, want)
		}
	}
}
