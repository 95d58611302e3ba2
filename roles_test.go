//go:build unix

package molt_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moltgo/molt/internal/proctest"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/drain"
)

// The test binary plays its own successors: TestMain dispatches on
// envRole to one of the roles below, each a short program using molt as a
// service would. Roles report what they saw as "event k=v ..." lines on
// standard output, which the tests read (see events).
const (
	envRole     = "MOLT_TEST_ROLE"      // the role to play
	envNextRole = "MOLT_TEST_NEXT_ROLE" // the role a "serve" process gives its successor
	envAddr     = "MOLT_TEST_ADDR"      // "network address" to listen on
	envCheck    = "MOLT_TEST_CHECK"     // what a role's pre-flight check does: see roleCheck
)

var roles = map[string]func() int{
	"serve":             roleServe,
	"exit-init":         roleExitInit,
	"hang":              roleHang,
	"stop-before-ready": roleStopBeforeReady,
	"exit-after-ready":  roleExitAfterReady,
	"bad-peer":          roleBadPeer,
	"new-only":          roleNewOnly,
	"spawn-clean":       roleSpawnClean,
	"check-clean":       roleCheckClean,
	"inventory":         roleInventory,
}

func TestMain(m *testing.M) {
	proctest.Dispatch(envRole, roles)
	os.Exit(m.Run())
}

func roleLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// roleOptions: the successor of a role process plays envNextRole.
func roleOptions() molt.Options {
	return molt.Options{
		Logger:       roleLogger(),
		ReadyTimeout: 30 * time.Second,
		Check:        roleCheck(),
		MaxDraining:  -1, // chains upgrade faster than drains end; the guard's tests are storm_test.go
		Command: func(cmd *exec.Cmd) error {
			next := os.Getenv(envNextRole)
			if next == "" {
				next = "serve"
			}
			cmd.Env = append(cmd.Env, envRole+"="+next)
			return nil
		},
	}
}

// roleCheck is a role's pre-flight check, as envCheck says: "fail" fails
// with output on both streams, "hang" waits for the check's deadline,
// "pass" passes, and unset means no check (nil).
func roleCheck() func(context.Context) error {
	switch os.Getenv(envCheck) {
	case "":
		return nil
	case "fail":
		return func(context.Context) error {
			fmt.Println("loading /etc/svc.conf")
			return errors.New("/etc/svc.conf:3: listen: port 99999 out of range")
		}
	case "hang":
		return func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		}
	}
	return func(context.Context) error {
		fmt.Println("config ok:", os.Getenv(envCheck))
		return nil
	}
}

func mustNew(opts molt.Options) *molt.Upgrader {
	u, err := molt.New(opts)
	if err != nil {
		proctest.Say("new-error err=%q", err.Error())
		os.Exit(10)
	}
	return u
}

func mustListen(u *molt.Upgrader) net.Listener {
	network, addr, _ := strings.Cut(os.Getenv(envAddr), " ")
	ln, err := u.Listen(network, addr)
	if err != nil {
		proctest.Say("listen-error err=%q", err.Error())
		os.Exit(11)
	}
	return ln
}

// roleServe is a complete service: it serves HTTP ("pid gen") on the
// listener, upgrades on POST /upgrade (answering with the result), stops on
// POST /stop, and drains and exits after an upgrade.
func roleServe() int {
	u := mustNew(roleOptions())
	ln := mustListen(u)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d %d", os.Getpid(), u.Generation())
	})
	mux.HandleFunc("POST /upgrade", func(w http.ResponseWriter, r *http.Request) {
		if err := u.Upgrade(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		// Keeps this generation draining until the client goes.
		proctest.Say("holding pid=%d", os.Getpid())
		<-r.Context().Done()
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "stopping")
		go u.Stop()
	})
	srv := drain.NewHTTPServer(&http.Server{Handler: mux})
	go srv.Serve(ln)
	if err := u.Ready(); err != nil {
		proctest.Say("ready-error err=%q", err.Error())
		return 12
	}
	proctest.Say("ready pid=%d gen=%d addr=%s", os.Getpid(), u.Generation(), ln.Addr())
	<-u.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv.Drain(ctx)
	u.Stop()
	proctest.Say("exit pid=%d reason=%s", os.Getpid(), u.Reason())
	return 0
}

func roleExitInit() int {
	mustNew(roleOptions())
	fmt.Fprintln(os.Stderr, "exit-init: configuration invalid, exiting with status 3")
	return 3
}

// roleHang starts a grandchild in its process group, reports it, and hangs.
func roleHang() int {
	mustNew(roleOptions())
	gc := exec.Command("sleep", "3600")
	if err := gc.Start(); err != nil {
		proctest.Say("hang-error err=%q", err.Error())
		return 13
	}
	proctest.Say("grandchild pid=%d", gc.Process.Pid)
	select {}
}

// roleStopBeforeReady claims the inherited Unix listener, gives up, and
// reports whether the socket file its parent serves is still there.
func roleStopBeforeReady() int {
	u := mustNew(roleOptions())
	ln := mustListen(u)
	path := ln.Addr().String()
	u.Stop()
	_, err := os.Stat(path)
	proctest.Say("stopped file-exists=%t", err == nil)
	return 0
}

func roleExitAfterReady() int {
	u := mustNew(roleOptions())
	mustListen(u)
	if err := u.Ready(); err != nil {
		proctest.Say("ready-error err=%q", err.Error())
		return 12
	}
	dir, err := os.Getwd()
	proctest.Say("exiting pid=%d dir=%s err=%v", os.Getpid(), dir, err)
	return 0
}

// roleBadPeer answers its parent with a frame of protocol version 9.
func roleBadPeer() int {
	fd, _ := strconv.Atoi(os.Getenv("MOLT_HANDOFF_FD"))
	f := os.NewFile(uintptr(fd), "handoff")
	io.CopyN(io.Discard, f, 6) // the start of HELLO
	f.Write([]byte{0, 0, 0, 2, 9, 3})
	f.Close()
	return 0
}

// roleNewOnly reports what New returned.
func roleNewOnly() int {
	u, err := molt.New(molt.Options{ReadyTimeout: 30 * time.Second})
	if err != nil {
		proctest.Say("new err=%q", err.Error())
		return 1
	}
	proctest.Say("new gen=%d", u.Generation())
	u.Stop()
	return 0
}

// roleSpawnClean inherits, then starts a process of its own (the test
// binary as check-clean) the way a service runs a helper program.
func roleSpawnClean() int {
	u := mustNew(roleOptions())
	mustListen(u)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envRole+"=check-clean")
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	err := cmd.Run()
	proctest.Say("spawned err=%v", err)
	u.Stop()
	return 0
}

// roleCheckClean reports the molt markers and sockets it inherited.
func roleCheckClean() int {
	_, marker := os.LookupEnv("MOLT_HANDOFF_FD")
	var sockets []string
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		fd, _ := strconv.Atoi(e.Name())
		if fd < 3 {
			continue
		}
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			sockets = append(sockets, e.Name())
		}
	}
	u, err := molt.New(molt.Options{})
	gen := uint64(0)
	if err == nil {
		gen = u.Generation()
		u.Stop()
	}
	proctest.Say("clean marker=%t sockets=%d gen=%d err=%v", marker, len(sockets), gen, err)
	return 0
}

// roleCommand returns an Options.Command hook that makes the successor
// play role with the test's pipe as standard output (and stdin if given).
func roleCommand(role, addr string, stdout, stdin *os.File, env ...string) func(*exec.Cmd) error {
	return func(cmd *exec.Cmd) error {
		cmd.Env = append(cmd.Env, envRole+"="+role, envAddr+"="+addr)
		cmd.Env = append(cmd.Env, env...)
		cmd.Stdout = stdout
		if stdin != nil {
			cmd.Stdin = stdin
		}
		return nil
	}
}

// pipe returns an events reader and the write end for role processes.
func pipe(t testing.TB) (*proctest.Events, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(); r.Close() })
	return proctest.NewEvents(r), w
}

// httpGet fetches url on a new connection and returns the body.
func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), err
}

// httpPost posts to url on a new connection and returns the body.
func httpPost(url string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post(url, "text/plain", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), errors.New(strings.TrimSpace(string(b)))
	}
	return string(b), err
}

// load sends GET requests on new connections from n goroutines until stop
// is closed (or a hard bound of count requests each), counting failures.
type load struct {
	ok, failed int
	errs       []string
	mu         sync.Mutex
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(url string, n, count int) *load {
	l := &load{stop: make(chan struct{})}
	for range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for range count {
				select {
				case <-l.stop:
					return
				default:
				}
				_, err := httpGet(url)
				l.mu.Lock()
				if err != nil {
					l.failed++
					if len(l.errs) < 5 {
						l.errs = append(l.errs, err.Error())
					}
				} else {
					l.ok++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *load) finish() (ok, failed int, errs []string) {
	close(l.stop)
	l.wg.Wait()
	return l.ok, l.failed, l.errs
}

// roleInventory claims every kind of inherited entry (but not the Unix
// listener at MOLT_TEST_UNCLAIMED), reports what it got, and once its
// parent is gone serves one connection on each listener and stops for good.
func roleInventory() int {
	u := mustNew(molt.Options{Logger: roleLogger(), PIDFile: os.Getenv("MOLT_TEST_PIDFILE")})
	tcp, err1 := u.Listen("tcp", "127.0.0.1:0")
	unixLn, err2 := u.Listen("unix", os.Getenv("MOLT_TEST_UNIX"))
	udp, err3 := u.ListenPacket("udp", "127.0.0.1:0")
	gram, err4 := u.ListenPacket("unixgram", os.Getenv("MOLT_TEST_GRAM"))
	admin, err5 := u.Listener("admin")
	state, err6 := u.File("state")
	conn, err7 := u.Conn("conn")
	if err := errors.Join(err1, err2, err3, err4, err5, err6, err7); err != nil {
		proctest.Say("inventory-error err=%q", err.Error())
		return 15
	}
	buf := make([]byte, 64)
	n, _ := state.Read(buf)
	conn.Write([]byte("continued"))
	conn.Close()
	if err := u.Ready(); err != nil {
		proctest.Say("ready-error err=%q", err.Error())
		return 12
	}
	proctest.Say("inventory gen=%d tcp=%s unix=%s udp=%s gram=%s admin=%s state=%s", u.Generation(),
		tcp.Addr(), unixLn.Addr(), udp.LocalAddr(), gram.LocalAddr(), admin.Addr(), buf[:n])
	u.WaitForParent(context.Background())
	for _, ln := range []net.Listener{tcp, unixLn, admin} { // one connection each: they really serve
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}
	u.Stop()
	proctest.Say("stopped pid=%d", os.Getpid())
	return 0
}
