//go:build unix

package molt_test

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/handoff"
	"github.com/moltgo/molt/internal/proctest"
	"github.com/moltgo/molt/internal/testcert"
)

// The state hand-off (Options.SaveState, Upgrader.InheritedState) with
// real processes: the "state" role is a service whose state is a request
// counter and, over HTTPS, the TLS session-ticket key.

// Environment of the "state" role.
const (
	envStateVersion = "MOLT_TEST_STATE_VERSION" // the version it saves and reads; "v1" if unset
	envStateKeys    = "MOLT_TEST_STATE_KEYS"    // "0": do not hand on the session-ticket key (the control case)
	envStateMigrate = "MOLT_TEST_STATE_MIGRATE" // "1": after a version mismatch, read the version the parent saved
	envStateCert    = "MOLT_TEST_STATE_CERT"    // PEM certificate: serve HTTPS with it and MOLT_TEST_STATE_KEY
	envStateKey     = "MOLT_TEST_STATE_KEY"     // PEM key of MOLT_TEST_STATE_CERT
)

func init() { roles["state"] = roleState }

// testState is the "state" role's state, as JSON.
type testState struct {
	Hits      int64  // GET /hit requests served, by every generation
	TicketKey []byte `json:",omitempty"` // the session-ticket key, 32 bytes
}

// roleState serves GET /hit ("generation hits", counting every generation's
// hits), POST /upgrade and POST /stop, over HTTPS if envStateCert is set
// (with a session-ticket key that it hands on unless envStateKeys is "0").
// It reports what it inherited ("inherited"), what a version mismatch
// said ("state-version"), "ready" and, after an upgrade, "exit".
func roleState() int {
	version := cmp.Or(os.Getenv(envStateVersion), "v1")
	carryKey := os.Getenv(envStateKeys) != "0"
	var (
		hits atomic.Int64
		key  [32]byte
	)
	opts := roleOptions()
	opts.SaveState = func(ctx context.Context) (string, []byte, error) {
		s := testState{Hits: hits.Load()}
		if carryKey {
			s.TicketKey = key[:]
		}
		b, err := json.Marshal(s)
		return version, b, err
	}
	u := mustNew(opts)

	data, err := u.InheritedState(version)
	if ve := (*molt.StateVersionError)(nil); errors.As(err, &ve) {
		proctest.Say("state-version err=%q is=%t saved=%s want=%s", err.Error(), errors.Is(err, molt.ErrStateVersion), ve.Saved, ve.Want)
		if os.Getenv(envStateMigrate) == "1" {
			data, err = u.InheritedState(ve.Saved)
		}
	}
	var st testState
	switch {
	case err == nil:
		if jerr := json.Unmarshal(data, &st); jerr != nil {
			proctest.Say("state-error err=%q", jerr.Error())
			return 17
		}
		if _, again := u.InheritedState(version); !errors.Is(again, molt.ErrStateTaken) {
			proctest.Say("state-error err=%q", fmt.Sprintf("second InheritedState = %v, want ErrStateTaken", again))
			return 17
		}
	case errors.Is(err, molt.ErrNoState), errors.Is(err, molt.ErrStateVersion): // start fresh
	default:
		proctest.Say("state-error err=%q", err.Error())
		return 17
	}
	errText := ""
	if err != nil {
		errText = err.Error()
	}
	proctest.Say("inherited gen=%d hits=%d key=%t nostate=%t err=%q", u.Generation(), st.Hits, len(st.TicketKey) == len(key),
		errors.Is(err, molt.ErrNoState), errText)
	hits.Store(st.Hits)
	if carryKey && len(st.TicketKey) == len(key) {
		copy(key[:], st.TicketKey)
	} else {
		rand.Read(key[:])
	}

	ln := mustListen(u)
	addr := ln.Addr().String()
	if pem := os.Getenv(envStateCert); pem != "" {
		cert, err := tls.X509KeyPair([]byte(pem), []byte(os.Getenv(envStateKey)))
		if err != nil {
			proctest.Say("state-error err=%q", err.Error())
			return 17
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
		cfg.SetSessionTicketKeys([][32]byte{key})
		ln = tls.NewListener(ln, cfg)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hit", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d %d", u.Generation(), hits.Add(1))
	})
	mux.HandleFunc("POST /upgrade", func(w http.ResponseWriter, r *http.Request) {
		if err := u.Upgrade(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "stopping")
		go u.Stop()
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	if err := u.Ready(); err != nil {
		proctest.Say("ready-error err=%q", err.Error())
		return 12
	}
	// Ready dropped a state nobody took; one taken is gone anyway.
	_, after := u.InheritedState(version)
	proctest.Say("ready pid=%d gen=%d addr=%s taken=%t", os.Getpid(), u.Generation(), addr,
		errors.Is(after, molt.ErrStateTaken) || errors.Is(after, molt.ErrNoState))
	<-u.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	u.Stop()
	proctest.Say("exit pid=%d reason=%s", os.Getpid(), u.Reason())
	return 0
}

// stateChain is a chain of "state" processes the test talks to.
type stateChain struct {
	ev     *proctest.Events
	url    string // "http(s)://addr/"
	client *http.Client
	pid    string // the generation that serves
	gen    int
}

// startStateChain starts generation 1 of the "state" role (over HTTPS
// with the client's TLS configuration if tlsConf is not nil).
func startStateChain(t *testing.T, tlsConf *tls.Config) *stateChain {
	t.Helper()
	ev, w := pipe(t)
	startRole(t, "state", "state", w)
	in := ev.Wait(t, "inherited")
	if in["gen"] != "1" || in["hits"] != "0" || in["nostate"] != "true" {
		t.Fatalf("generation 1 inherited %v, want no state", in)
	}
	r := ev.Wait(t, "ready")
	c := &stateChain{ev: ev, url: "http://" + r["addr"] + "/", pid: r["pid"], gen: 1,
		client: &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: tlsConf}}}
	if tlsConf != nil {
		c.url = "https://" + r["addr"] + "/"
	}
	t.Cleanup(func() {
		c.client.CloseIdleConnections()
		ev.KillAll()
	})
	return c
}

// hit counts one request and returns the generation that served it, the
// count it answered, and whether the TLS session was resumed.
func (c *stateChain) hit(t *testing.T) (gen int, hits int64, resumed bool) {
	t.Helper()
	resp, err := c.client.Get(c.url + "hit")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /hit: %s %q %v", resp.Status, b, err)
	}
	if _, err := fmt.Sscan(string(b), &gen, &hits); err != nil {
		t.Fatalf("GET /hit = %q: %v", b, err)
	}
	return gen, hits, resp.TLS != nil && resp.TLS.DidResume
}

// upgrade upgrades the serving generation, waits until its successor is
// ready and the old one has exited (so that no request reaches it), and
// returns what the successor inherited.
func (c *stateChain) upgrade(t *testing.T) map[string]string {
	t.Helper()
	resp, err := c.client.Post(c.url+"upgrade", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upgrade of generation %d: %s %s", c.gen, resp.Status, b)
	}
	c.gen++
	in := c.ev.Wait(t, "inherited")
	r := c.ev.Wait(t, "ready")
	if r["gen"] != strconv.Itoa(c.gen) || in["gen"] != r["gen"] {
		t.Fatalf("after the upgrade: inherited %v, ready %v; want generation %d", in, r, c.gen)
	}
	if r["taken"] != "true" {
		t.Errorf("InheritedState after Ready did not say the state is gone: %v", r)
	}
	if x := c.ev.Wait(t, "exit"); x["pid"] != c.pid || x["reason"] != "upgraded" {
		t.Fatalf("exit %v, want pid %s upgraded", x, c.pid)
	}
	c.pid = r["pid"]
	return in
}

func (c *stateChain) stop(t *testing.T) {
	t.Helper()
	resp, err := c.client.Post(c.url+"stop", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	pid, _ := strconv.Atoi(c.pid)
	proctest.WaitGone(t, pid)
}

// TestStateCountersSurviveUpgrades: a request counter goes on counting
// through three upgrades (generation 1 to 4): each generation adds its
// requests to what it inherited, and SaveState is called at each upgrade
// (the count it hands on is the latest).
func TestStateCountersSurviveUpgrades(t *testing.T) {
	if testing.Short() && runtime.GOOS != "linux" {
		t.Skip("multi-process test")
	}
	c := startStateChain(t, nil)
	want := int64(0)
	for gen := 1; gen <= 4; gen++ {
		if gen > 1 {
			in := c.upgrade(t)
			if in["hits"] != strconv.FormatInt(want, 10) || in["err"] != "" {
				t.Fatalf("generation %d inherited %v, want hits=%d", gen, in, want)
			}
		}
		for range gen { // generation n serves n requests
			want++
			g, hits, _ := c.hit(t)
			if g != gen || hits != want {
				t.Fatalf("GET /hit = generation %d, %d hits; want generation %d, %d hits", g, hits, gen, want)
			}
		}
	}
	c.stop(t)
}

// TestStateTLSSessionResumes: a server that hands on its session-ticket key
// resumes, in the new generation, the TLS session a client began with the
// old one (tls.ConnectionState.DidResume); without the key (the control
// case) the session starts anew, which shows the check can fail.
func TestStateTLSSessionResumes(t *testing.T) {
	if testing.Short() && runtime.GOOS != "linux" {
		t.Skip("multi-process test")
	}
	cert := testcert.Must()
	for _, carry := range []bool{true, false} {
		t.Run(fmt.Sprintf("key handed on=%t", carry), func(t *testing.T) {
			t.Setenv(envStateCert, string(cert.CertPEM))
			t.Setenv(envStateKey, string(cert.KeyPEM))
			t.Setenv(envStateKeys, map[bool]string{true: "1", false: "0"}[carry])
			c := startStateChain(t, &tls.Config{RootCAs: cert.Pool(), ClientSessionCache: tls.NewLRUClientSessionCache(8)})
			if _, _, resumed := c.hit(t); resumed {
				t.Fatal("the first connection resumed a session")
			}
			if _, _, resumed := c.hit(t); !resumed {
				t.Fatal("the second connection to generation 1 did not resume: the client keeps no session")
			}
			if in := c.upgrade(t); in["key"] != strconv.FormatBool(carry) {
				t.Fatalf("generation 2 inherited %v, want key=%t", in, carry)
			}
			gen, hits, resumed := c.hit(t)
			if gen != 2 || hits != 3 {
				t.Errorf("GET /hit after the upgrade = generation %d, %d hits; want 2, 3", gen, hits)
			}
			if resumed != carry {
				t.Errorf("DidResume with generation 2 = %t, want %t", resumed, carry)
			}
			c.stop(t)
		})
	}
}

// TestStateTooLarge: a state over the limits, or a SaveState that fails,
// fails the upgrade before any successor is started (the successor's
// command is not even built), with an error that says why; this
// generation serves on, with no descriptor or goroutine left behind.
func TestStateTooLarge(t *testing.T) {
	errBoom := errors.New("counters locked")
	tests := []struct {
		name   string
		save   func(context.Context) (string, []byte, error)
		target error
		msg    string
	}{{
		name:   "data",
		save:   func(context.Context) (string, []byte, error) { return "v1", make([]byte, molt.MaxStateSize+1), nil },
		target: molt.ErrStateTooLarge,
		msg:    "SaveState returned 67108865 bytes, more than MaxStateSize (67108864)",
	}, {
		name: "version",
		save: func(context.Context) (string, []byte, error) {
			return strings.Repeat("v", molt.MaxStateVersionLen+1), nil, nil
		},
		target: molt.ErrStateTooLarge,
		msg:    "a version of 257 bytes, more than MaxStateVersionLen (256)",
	}, {
		name:   "SaveState fails",
		save:   func(context.Context) (string, []byte, error) { return "", nil, errBoom },
		target: errBoom,
		msg:    "molt: SaveState: counters locked",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var calls, commands atomic.Int32
			u := newUpgrader(t, molt.Options{
				Logger: roleLogger(),
				SaveState: func(ctx context.Context) (string, []byte, error) {
					calls.Add(1)
					return tc.save(ctx)
				},
				Command: func(*exec.Cmd) error { commands.Add(1); return nil },
			})
			ln, err := u.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			url := serveHere(t, u, ln)
			if err := u.Ready(); err != nil {
				t.Fatal(err)
			}
			// Pidfds of earlier tests' processes close when the GC finds
			// them (os.FindProcess opens one): they are not this test's.
			fds, goroutines := proctest.CountFDs(t, os.Getpid(), proctest.NoPidfds), runtime.NumGoroutine()

			err = u.Upgrade(context.Background())
			t.Logf("Upgrade: %v", err)
			var ce *molt.ChildError
			switch {
			case !errors.As(err, &ce):
				t.Fatalf("Upgrade = %v, want a *molt.ChildError", err)
			case ce.Stage != molt.StageStart || ce.PID != 0:
				t.Errorf("ChildError at stage %v, pid %d; want stage start, no successor", ce.Stage, ce.PID)
			case !errors.Is(err, tc.target) || !strings.Contains(err.Error(), tc.msg):
				t.Errorf("Upgrade = %v, want %v saying %q", err, tc.target, tc.msg)
			}
			if calls.Load() != 1 || commands.Load() != 0 {
				t.Errorf("SaveState called %d times, Command %d times; want 1 and 0", calls.Load(), commands.Load())
			}
			if got := u.State(); got != molt.StateReady {
				t.Errorf("State after the failed upgrade = %v, want ready", got)
			}
			if _, err := httpGet(url); err != nil {
				t.Errorf("the service does not serve after the failed upgrade: %v", err)
			}
			proctest.CheckFDs(t, "after the failed upgrade", os.Getpid(), proctest.NoPidfds, fds)
			proctest.CheckGoroutines(t, "after the failed upgrade", goroutines)
		})
	}
}

// TestStateVersion: the successor reads the state only under the version
// it asks for; a mismatch is an error naming both versions that leaves
// the state in place (a successor that can migrate asks again), and a
// parent without SaveState gives its successor ErrNoState. Either way the
// successor starts and the upgrade succeeds: the application decides.
func TestStateVersion(t *testing.T) {
	if testing.Short() && runtime.GOOS != "linux" {
		t.Skip("multi-process test")
	}
	saveV1 := func(context.Context) (string, []byte, error) {
		b, err := json.Marshal(testState{Hits: 41})
		return "v1", b, err
	}
	tests := []struct {
		name     string
		save     func(context.Context) (string, []byte, error)
		env      []string
		mismatch bool   // a state-version event is expected
		hits     string // what the successor starts counting from
		errHas   string // in the inherited event's error
	}{
		{name: "same version", save: saveV1, hits: "41"},
		{name: "mismatch, fresh start", save: saveV1, env: []string{envStateVersion + "=v2"}, mismatch: true, hits: "0",
			errHas: `inherited state has version "v1", this process reads "v2"`},
		{name: "mismatch, migrated", save: saveV1, env: []string{envStateVersion + "=v2", envStateMigrate + "=1"}, mismatch: true, hits: "41"},
		{name: "parent saved none", hits: "0", errHas: "no inherited state: the parent generation (pid " + strconv.Itoa(os.Getpid()) + ") saved none"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, w := pipe(t)
			t.Cleanup(ev.KillAll)
			u, err := molt.New(molt.Options{
				Logger:       roleLogger(),
				ReadyTimeout: 30 * time.Second,
				SaveState:    tc.save,
				Command:      roleCommand("state", "tcp 127.0.0.1:0", w, nil, tc.env...),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer u.Stop()
			if _, err := u.Listen("tcp", "127.0.0.1:0"); err != nil {
				t.Fatal(err)
			}
			if err := u.Ready(); err != nil {
				t.Fatal(err)
			}
			if _, err := u.InheritedState("v1"); !errors.Is(err, molt.ErrNoState) {
				t.Errorf("InheritedState in generation 1 = %v, want ErrNoState", err)
			}
			if err := u.Upgrade(context.Background()); err != nil {
				t.Fatalf("Upgrade = %v, want nil", err)
			}
			if tc.mismatch {
				sv := ev.Wait(t, "state-version")
				if sv["is"] != "true" || sv["saved"] != "v1" || sv["want"] != "v2" || !strings.Contains(sv["err"], `"v1"`) || !strings.Contains(sv["err"], `"v2"`) {
					t.Errorf("version mismatch reported %v, want ErrStateVersion naming v1 and v2", sv)
				}
			}
			in := ev.Wait(t, "inherited")
			if in["hits"] != tc.hits || !strings.Contains(in["err"], tc.errHas) || (tc.errHas == "") != (in["err"] == "") {
				t.Errorf("the successor inherited %v, want hits=%s and an error saying %q", in, tc.hits, tc.errHas)
			}
			r := ev.Wait(t, "ready")
			u.Stop() // closes this generation's listener: the next request reaches the successor
			if _, err := httpPost("http://" + r["addr"] + "/stop"); err != nil {
				t.Fatal(err)
			}
			pid, _ := strconv.Atoi(r["pid"])
			proctest.WaitGone(t, pid)
		})
	}
}

// TestStateGenerationOne: without a parent there is no state, at once.
func TestStateGenerationOne(t *testing.T) {
	u := newUpgrader(t, molt.Options{})
	_, err := u.InheritedState("v1")
	if !errors.Is(err, molt.ErrNoState) || errors.Is(err, molt.ErrStateVersion) {
		t.Fatalf("InheritedState = %v, want ErrNoState", err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	if _, err := u.InheritedState("v1"); !errors.Is(err, molt.ErrNoState) {
		t.Fatalf("InheritedState after Ready = %v, want ErrNoState", err)
	}
}

// roleStateWait asks for the state, tries Ready, and reports both errors.
func roleStateWait() int {
	timeout, _ := time.ParseDuration(os.Getenv("MOLT_TEST_READY_TIMEOUT"))
	u := mustNew(molt.Options{Logger: roleLogger(), ReadyTimeout: timeout})
	start := time.Now()
	_, err := u.InheritedState("v1")
	waited := time.Since(start)
	rerr := u.Ready()
	proctest.Say("state-wait err=%q ready=%q same=%t in-time=%t waited=%s", fmt.Sprint(err), fmt.Sprint(rerr),
		errors.Is(rerr, err), waited < timeout+30*time.Second, waited)
	u.Stop()
	return 0
}

func init() { roles["state-wait"] = roleStateWait }

// TestStateHandoffBroken: a parent that announces a state and sends none
// (InheritedState gives up at the ReadyTimeout), or cuts it off, or sends
// more than it announced: the successor's InheritedState and Ready return
// the hand-off's error, and the parent, while its end is open, is told.
func TestStateHandoffBroken(t *testing.T) {
	if testing.Short() && runtime.GOOS != "linux" {
		t.Skip("multi-process test")
	}
	header := func(size int) []byte {
		return handoff.AppendFrame(nil, handoff.TypeState, handoff.StateHeader{Size: size, Version: "v1"}.Marshal())
	}
	tests := []struct {
		name  string
		after []byte // what follows the HELLO
		close bool   // the parent closes its end after it
		want  string
	}{
		{name: "never sent", want: "i/o timeout"},
		{name: "cut off", after: append(header(10), handoff.AppendFrame(nil, handoff.TypeState, []byte("abc"))...), close: true,
			want: "unexpected EOF"},
		{name: "more than announced", after: append(header(2), handoff.AppendFrame(nil, handoff.TypeState, []byte("abc"))...),
			want: "STATE data frame of 3 bytes exceeds the 2 still expected"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			if err != nil {
				t.Fatal(err)
			}
			parentFile, childEnd := os.NewFile(uintptr(fds[0]), "parent"), os.NewFile(uintptr(fds[1]), "child")
			nc, err := net.FileConn(parentFile)
			parentFile.Close()
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			ev, w := pipe(t)
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), envRole+"=state-wait", "MOLT_HANDOFF_FD=3", "MOLT_TEST_READY_TIMEOUT=1s")
			cmd.ExtraFiles = []*os.File{childEnd}
			cmd.Stdout, cmd.Stderr = w, os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			childEnd.Close()
			hello := handoff.Hello{Generation: 2, ParentPID: os.Getpid(), State: true}
			if _, err := nc.Write(append(handoff.AppendFrame(nil, handoff.TypeHello, hello.Marshal()), tc.after...)); err != nil {
				t.Fatal(err)
			}
			if tc.close {
				nc.(*net.UnixConn).CloseWrite()
			}
			r := ev.Wait(t, "state-wait")
			t.Logf("successor: %v", r)
			if !strings.Contains(r["err"], tc.want) || !strings.Contains(r["err"], "hand-off from parent: state") ||
				r["same"] != "true" || r["in-time"] != "true" {
				t.Errorf("successor reported %v, want InheritedState and Ready to fail with the hand-off's error mentioning %q", r, tc.want)
			}
			if !tc.close {
				nc.SetDeadline(time.Now().Add(time.Minute))
				m, err := handoff.NewConn(nc.(*net.UnixConn)).RecvMessage()
				if err != nil || m.Type != handoff.TypeFailed || !strings.Contains(m.Reason, tc.want) {
					t.Errorf("parent received %v %q, %v; want FAILED mentioning %q", m.Type, m.Reason, err, tc.want)
				}
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("successor: %v", err)
			}
		})
	}
}
