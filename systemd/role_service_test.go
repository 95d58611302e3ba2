//go:build unix

package systemd_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/drain"
	"github.com/moltgo/molt/systemd"
)

// The "service" role is the service the real-systemd test runs: an HTTP
// server under molt and this package, configured by its unit's
// Environment=, upgrading through its control socket (MOLT_SOCKET, for
// ExecReload=molt upgrade) or on SIGHUP, and draining on SIGTERM. It appends what it does to the events file in its directory,
// one line per write.
const (
	envDir       = "MOLT_SD_DIR"           // the events file and the fail-init marker live here
	envListen    = "MOLT_SD_LISTEN"        // name=network:addr,... for Service.Listen
	envSockets   = "MOLT_SD_SOCKETS"       // name,... for Service.Listener (socket activation)
	envFDStore   = "MOLT_SD_FDSTORE"       // "1": Options.FDStore
	envPIDFile   = "MOLT_SD_PIDFILE"       // molt.Options.PIDFile
	envExtend    = "MOLT_SD_EXTEND"        // "1": Options.ExtendStopTimeout
	envSocket    = "MOLT_SOCKET"           // the control socket, as in the example units
	envProbation = "MOLT_SD_PROBATION"     // molt.Options.Probation, a duration
	envTakeover  = "MOLT_EXAMPLE_TAKEOVER" // molt.Options.TakeoverSocket and TakeoverFrom, as in the example

	failInitFile   = "fail-init"   // while it exists, successors fail before Ready
	crashReadyFile = "crash-ready" // while it exists, successors exit 200 ms after Ready
)

func init() { roles["service"] = roleService }

type namedListener struct {
	name string
	ln   net.Listener
}

func roleService() int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)

	pid := os.Getpid()
	dir := os.Getenv(envDir)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("pid", pid)
	events := func(format string, args ...any) {
		f, err := os.OpenFile(filepath.Join(dir, "events"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			log.Error("events file", "err", err)
			return
		}
		defer f.Close()
		f.WriteString(fmt.Sprintf(format, args...) + "\n")
	}
	fail := func(format string, args ...any) int {
		msg := fmt.Sprintf(format, args...)
		fmt.Fprintf(os.Stderr, "molt-testservice (pid %d): %s\n", pid, msg)
		events("fail pid=%d msg=%q", pid, msg)
		return 1
	}
	listenEnv := fmt.Sprintf("listen_pid=%q listen_fds=%q listen_fdnames=%q",
		os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"))

	probation, _ := time.ParseDuration(os.Getenv(envProbation))
	upg, err := molt.New(molt.Options{ReadyTimeout: 20 * time.Second, Logger: log, PIDFile: os.Getenv(envPIDFile), Probation: probation,
		TakeoverSocket: os.Getenv(envTakeover), TakeoverFrom: os.Getenv(envTakeover)})
	if err != nil {
		return fail("%v", err)
	}
	defer upg.Stop()
	svc, err := systemd.Attach(upg, systemd.Options{
		FDStore:           os.Getenv(envFDStore) == "1",
		ExtendStopTimeout: os.Getenv(envExtend) == "1",
		Logger:            log,
	})
	if err != nil {
		return fail("attach: %v", err)
	}
	defer svc.Close()
	gen := upg.Generation()
	_, leftover := os.LookupEnv("LISTEN_FDS")
	events("start pid=%d gen=%d %s listen_left=%t", pid, gen, listenEnv, leftover)

	var lns []namedListener
	for _, spec := range strings.Split(os.Getenv(envListen), ",") {
		if spec == "" {
			continue
		}
		name, na, _ := strings.Cut(spec, "=")
		network, addr, _ := strings.Cut(na, ":")
		ln, err := svc.Listen(name, network, addr)
		if err != nil {
			return fail("listen: %v", err)
		}
		lns = append(lns, namedListener{name, ln})
	}
	for _, name := range strings.Split(os.Getenv(envSockets), ",") {
		if name == "" {
			continue
		}
		ln, err := svc.Listener(name)
		if err != nil {
			return fail("listener: %v", err)
		}
		lns = append(lns, namedListener{name, ln})
	}
	var ctl *control.Server
	if path := os.Getenv(envSocket); path != "" {
		if ctl, err = control.Listen(upg, path, control.Options{Logger: log}); err != nil {
			return fail("control: %v", err)
		}
		defer ctl.Close()
	}
	if _, err := os.Stat(filepath.Join(dir, failInitFile)); err == nil && upg.HasParent() {
		return fail("init failed: simulated configuration error")
	}

	var servers []*drain.HTTPServer
	served := make(chan error, len(lns))
	var desc []string
	for _, nl := range lns {
		srv := drain.NewHTTPServer(&http.Server{Handler: handler(pid, gen, nl.name), ReadHeaderTimeout: 10 * time.Second})
		servers = append(servers, srv)
		go func() { served <- srv.Serve(nl.ln) }()
		desc = append(desc, nl.name+"@"+nl.ln.Addr().String())
	}
	events("serving pid=%d gen=%d sockets=%s", pid, gen, strings.Join(desc, ","))
	if err := upg.Ready(); err != nil {
		return fail("ready: %v", err)
	}
	events("ready pid=%d gen=%d", pid, gen)
	if _, err := os.Stat(filepath.Join(dir, crashReadyFile)); err == nil && upg.HasParent() {
		time.Sleep(200 * time.Millisecond) // the fault: a crash soon after taking over
		events("crash pid=%d gen=%d", pid, gen)
		os.Exit(3) // no deferred Stop: that would tell the parent it stops on purpose
	}

	var upgrades sync.WaitGroup
	reason := ""
loop:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGHUP {
				upgrades.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					err := upg.Upgrade(ctx)
					if err != nil {
						log.Error("upgrade failed", "err", err)
					}
					events("upgrade pid=%d gen=%d ok=%t err=%q", pid, gen, err == nil, errString(err))
				})
				continue
			}
			reason = "signal " + s.String()
			break loop
		case <-upg.Exit():
			reason = upg.Reason().String()
			break loop
		case err := <-served:
			reason = "serve: " + errString(err)
			break loop
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := svc.Draining(ctx)
	var wg sync.WaitGroup
	errs := make([]error, len(servers))
	for i, srv := range servers {
		wg.Go(func() { errs[i] = srv.Drain(ctx) })
	}
	wg.Wait()
	done()
	if ctl != nil {
		ctl.Close() // before Stop
	}
	upg.Stop()
	upgrades.Wait()
	svc.Close()
	drainErr := errors.Join(errs...)
	events("exit pid=%d gen=%d reason=%q drain_err=%q", pid, gen, reason, errString(drainErr))
	if drainErr != nil {
		return 1
	}
	return 0
}

func handler(pid int, gen uint64, name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pid=%d gen=%d name=%s\n", pid, gen, name)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush() // the client knows it was accepted
		time.Sleep(time.Duration(ms) * time.Millisecond)
		fmt.Fprintf(w, "done pid=%d gen=%d\n", pid, gen)
	})
	return mux
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
