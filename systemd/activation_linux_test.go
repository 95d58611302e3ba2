package systemd_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/systemd"
)

// The "activated" role is a socket-activated service: systemd's part is
// played by sh, which sets LISTEN_PID to its own PID and execs the test
// binary with the sockets as descriptors 3 and up. Generation 1 takes the
// sockets, upgrades once, and its successor, which sees no LISTEN_*, finds
// them by name. Both print what they saw, one "event" line each.
const (
	envWebAddr   = "MOLT_SD_WEB"   // tcp address "web" must have
	envAdminPath = "MOLT_SD_ADMIN" // unix path "admin" must have; "" to skip
	envUpgrade   = "MOLT_SD_UPGRADE"
	envDNS       = "MOLT_SD_DNS" // "1": take the datagram socket "dns"
)

func init() { roles["activated"] = roleActivated }

func say(format string, args ...any) { fmt.Printf("event "+format+"\n", args...) }

func roleActivated() int {
	env := fmt.Sprintf("LISTEN_PID=%q LISTEN_FDS=%q LISTEN_FDNAMES=%q",
		os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"))
	upg, err := molt.New(molt.Options{ReadyTimeout: 20 * time.Second, Logger: testLogger()})
	if err != nil {
		say("error new %v", err)
		return 1
	}
	defer upg.Stop()
	svc, err := systemd.Attach(upg, systemd.Options{FDStore: os.Getenv(envFDStore) == "1"})
	if err != nil {
		say("error attach %v", err)
		return 1
	}
	defer svc.Close()
	gen := upg.Generation()
	left := false
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		_, ok := os.LookupEnv(v)
		left = left || ok
	}
	cloexec := "-"
	if gen == 1 {
		cloexec = fmt.Sprint(isCloexec(3) && isCloexec(4))
	}
	say("gen=%d %s left=%t cloexec=%s", gen, env, left, cloexec)

	web, err := svc.Listen("web", "tcp", os.Getenv(envWebAddr))
	if err != nil {
		say("gen=%d error web %v", gen, err)
		return 1
	}
	defer web.Close()
	addrs := "web=" + web.Addr().String()
	if p := os.Getenv(envAdminPath); p != "" {
		admin, err := svc.Listen("admin", "unix", p)
		if err != nil {
			say("gen=%d error admin %v", gen, err)
			return 1
		}
		defer admin.Close()
		addrs += " admin=" + admin.Addr().String()
	}
	if os.Getenv(envDNS) == "1" {
		dns, err := svc.PacketConn("dns")
		if err != nil {
			say("gen=%d error dns %v", gen, err)
			return 1
		}
		defer dns.Close()
		addrs += " dns=" + dns.LocalAddr().String()
	}
	var inv []string
	for _, e := range upg.Stats().Inventory {
		inv = append(inv, string(e.Kind)+":"+e.Name)
	}
	say("gen=%d %s inventory=%s", gen, addrs, strings.Join(inv, ","))
	if err := upg.Ready(); err != nil {
		say("gen=%d error ready %v", gen, err)
		return 1
	}
	if gen == 1 && os.Getenv(envUpgrade) == "1" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := upg.Upgrade(ctx); err != nil {
			say("gen=%d error upgrade %v", gen, err)
			return 1
		}
		say("gen=%d upgraded", gen)
		return 0
	}
	// The successor: serve until the parent is gone, then stop.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	upg.WaitForParent(ctx)
	say("gen=%d done", gen)
	return 0
}

func isCloexec(fd int) bool {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil && flags&unix.FD_CLOEXEC != 0
}

// runActivated starts the role as systemd would, with files as
// descriptors 3 and up, and returns its event lines once it and its
// successor have exited.
func runActivated(t *testing.T, files []*os.File, names string, env ...string) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// sh plays systemd: LISTEN_PID is the PID that exec keeps.
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0"`, exe)
	cmd.Env = append(os.Environ(), useRole(t, "activated"), fmt.Sprintf("LISTEN_FDS=%d", len(files)))
	if names != "" {
		cmd.Env = append(cmd.Env, "LISTEN_FDNAMES="+names)
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(out) // EOF once the successor, which shares the pipe, has exited too
	for sc.Scan() {
		if l, ok := strings.CutPrefix(sc.Text(), "event "); ok {
			lines = append(lines, l)
		}
	}
	cmd.Wait()
	t.Logf("events:\n%s", strings.Join(lines, "\n"))
	return lines
}

func TestSocketActivation(t *testing.T) {
	checkFDs(t)
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	dir, err := os.MkdirTemp("", "sda")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	adminPath := dir + "/admin.sock"
	admin, err := net.Listen("unix", adminPath)
	if err != nil {
		t.Fatal(err)
	}
	admin.(*net.UnixListener).SetUnlinkOnClose(false)
	defer admin.Close()

	dns, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	dnsFile, err := dns.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer dnsFile.Close()

	lines := runActivated(t, []*os.File{listenerFile(t, web), listenerFile(t, admin), dnsFile}, "web:admin:dns",
		envWebAddr+"="+web.Addr().String(), envAdminPath+"="+adminPath, envDNS+"=1", envUpgrade+"=1")
	inv := "listener:systemd/web,file:systemd/admin,packet-conn:systemd/dns"
	want := []string{
		`gen=1 LISTEN_PID="" LISTEN_FDS="3" LISTEN_FDNAMES="web:admin:dns" left=false cloexec=true`,
		fmt.Sprintf(`gen=1 web=%s admin=%s dns=%s inventory=%s`, web.Addr(), adminPath, dns.LocalAddr(), inv),
		`gen=2 LISTEN_PID="" LISTEN_FDS="" LISTEN_FDNAMES="" left=false cloexec=-`,
		fmt.Sprintf(`gen=2 web=%s admin=%s dns=%s inventory=%s`, web.Addr(), adminPath, dns.LocalAddr(), inv),
		`gen=1 upgraded`,
		`gen=2 done`,
	}
	// LISTEN_PID is the child's, so its value is not known here.
	for i := range lines {
		if strings.HasPrefix(lines[i], "gen=1 LISTEN_PID=") {
			_, rest, _ := strings.Cut(lines[i], " LISTEN_FDS=")
			lines[i] = `gen=1 LISTEN_PID="" LISTEN_FDS=` + rest
		}
	}
	for _, w := range want {
		found := false
		for _, l := range lines {
			found = found || l == w
		}
		if !found {
			t.Errorf("missing event %q", w)
		}
	}
	// The socket file is systemd's: no generation removed it.
	if fi, err := os.Lstat(adminPath); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket file after both generations stopped: %v, %v", fi, err)
	}
}

func TestSocketActivationMismatch(t *testing.T) {
	checkFDs(t)
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	lines := runActivated(t, []*os.File{listenerFile(t, web)}, "web", envWebAddr+"=127.0.0.1:1")
	if len(lines) != 2 || !strings.Contains(lines[1], "error web") ||
		!strings.Contains(lines[1], systemd.ErrAddrMismatch.Error()) {
		t.Errorf("events %q, want Listen(web) to fail with %v", lines, systemd.ErrAddrMismatch)
	}
}

func TestSocketActivationWrongType(t *testing.T) {
	checkFDs(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	lines := runActivated(t, []*os.File{r}, "web", envWebAddr+"=127.0.0.1:1")
	if len(lines) != 2 || !strings.Contains(lines[1], systemd.ErrWrongType.Error()) {
		t.Errorf("events %q, want Listen(web) to fail with %v", lines, systemd.ErrWrongType)
	}
}

func TestSocketActivationBadNames(t *testing.T) {
	checkFDs(t)
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	lines := runActivated(t, []*os.File{listenerFile(t, web)}, "web:admin")
	if len(lines) != 1 || !strings.Contains(lines[0], "error attach") || !strings.Contains(lines[0], "LISTEN_FDNAMES") {
		t.Errorf("events %q, want Attach to fail naming LISTEN_FDNAMES", lines)
	}
}

// After a restart, systemd passes back what the store held: a socket whose
// address the new configuration changed is replaced (removed from the
// store, a new one stored), one nobody claims any more is removed, and all
// of that happens before READY=1.
func TestFDStoreAfterRestart(t *testing.T) {
	checkFDs(t)
	fake := newFakeSystemd(t, false)
	oldWeb, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer oldWeb.Close()
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	newAddr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	lines := runActivated(t, []*os.File{listenerFile(t, oldWeb), listenerFile(t, gone)}, "web:gone",
		envWebAddr+"="+newAddr, envFDStore+"=1")
	if len(lines) != 3 || !strings.Contains(lines[1], "web="+newAddr) {
		t.Fatalf("events %q, want web served on %s", lines, newAddr)
	}
	var got []string
	for {
		m := fake.next()
		got = append(got, strings.Join(m.vars, " "))
		if m.has("READY=1") {
			break
		}
	}
	want := []string{"FDSTOREREMOVE=1 FDNAME=gone", "FDSTOREREMOVE=1 FDNAME=web", "FDSTORE=1 FDNAME=web"}
	if len(got) != 4 || strings.Join(got[:3], "|") != strings.Join(want, "|") {
		t.Errorf("notifications %q, want %q and then READY=1", got, want)
	}
	stored := fake.storedFiles()
	if len(stored) != 1 {
		t.Fatalf("%d descriptors stored, want 1", len(stored))
	}
	sa, err := unix.Getsockname(int(fdOf(t, stored[0])))
	if err != nil {
		t.Fatal(err)
	}
	if in4, ok := sa.(*unix.SockaddrInet4); !ok || fmt.Sprintf("127.0.0.1:%d", in4.Port) != newAddr {
		t.Errorf("stored socket bound to %+v, want %s", sa, newAddr)
	}
}
