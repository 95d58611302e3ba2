//go:build unix

// Package runchild is the program the tests of "molt run" supervise: a
// socket-activated HTTP server that reports what it is doing as event
// lines ([proctest.Say]). Test binaries run it as a role: when argv[1] is
// [Arg], [Main] runs it.
package runchild

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/drain"
	"github.com/moltgo/molt/internal/proctest"
	"github.com/moltgo/molt/systemd"
)

// Arg is argv[1] of the child; argv[2] is its mode.
const Arg = "molt-runchild"

// EnvModeFile names a file whose content, if the file exists, is the mode
// instead of argv[2]: a test changes what the next instance does.
const EnvModeFile = "MOLT_RUNCHILD_MODE_FILE"

// EnvExit is the status to exit with after a stop signal (default 0).
const EnvExit = "MOLT_RUNCHILD_EXIT"

// The modes.
const (
	Notify = "notify" // serve, then READY=1 on NOTIFY_SOCKET
	Probe  = "probe"  // serve; no notification
	Fail   = "fail"   // exit 3 at once, saying why on stderr
	Hang   = "hang"   // serve nothing, never ready; exit at a stop signal
	Orphan = "orphan" // as Notify, after leaving an orphan behind (see orphanParent)
	Molt   = "molt"   // a service built with the molt library: its sockets and READY=1 through package systemd

	orphanParent = "orphan-parent" // starts orphan-child and exits
	orphanChild  = "orphan-child"  // says its PID as the test's /proc sees it, then exits
)

// Dispatch runs the child and exits if argv says so; otherwise it returns.
func Dispatch() {
	if len(os.Args) >= 3 && os.Args[1] == Arg {
		os.Exit(Main(os.Args[2]))
	}
}

// Main runs the child in mode and returns its exit status.
func Main(mode string) int {
	if f := os.Getenv(EnvModeFile); f != "" {
		if b, err := os.ReadFile(f); err == nil {
			mode = strings.TrimSpace(string(b))
		}
	}
	switch mode {
	case orphanParent:
		cmd := exec.Command(os.Args[0], Arg, orphanChild)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "runchild:", err)
			return 1
		}
		return 0 // without waiting: the child is orphaned
	case orphanChild:
		proctest.Say("orphan pid=%d", hostPID())
		return 0
	case Fail:
		fmt.Fprintln(os.Stderr, "runchild: bad configuration, giving up")
		return 3
	case Molt:
		return moltService()
	}
	if got := os.Getenv("LISTEN_PID"); got != strconv.Itoa(os.Getpid()) {
		fmt.Fprintf(os.Stderr, "runchild: LISTEN_PID=%q, but this is pid %d\n", got, os.Getpid())
		return 4
	}
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	if n < 1 || len(names) != n {
		fmt.Fprintf(os.Stderr, "runchild: LISTEN_FDS=%q LISTEN_FDNAMES=%q\n", os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"))
		return 4
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT)
	if mode == Orphan {
		cmd := exec.Command(os.Args[0], Arg, orphanParent)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), EnvModeFile+"=")
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "runchild: orphan-parent:", err)
			return 1
		}
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pid=%d\n", os.Getpid())
	})}
	if mode != Hang {
		for i := range n {
			f := os.NewFile(uintptr(3+i), names[i])
			ln, err := net.FileListener(f)
			f.Close()
			if err != nil {
				fmt.Fprintln(os.Stderr, "runchild:", err)
				return 5
			}
			go srv.Serve(ln)
		}
		proctest.Say("serving pid=%d fds=%d names=%s", os.Getpid(), n, strings.Join(names, ","))
	}
	if mode == Notify || mode == Orphan {
		c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "runchild: notify:", err)
			return 6
		}
		c.Write([]byte("STATUS=serving\nREADY=1"))
		c.Close()
	}
	for sig := range sigs {
		switch sig {
		case syscall.SIGTERM, syscall.SIGINT:
			srv.Close() // the tests need no drain: they count no requests
			code, _ := strconv.Atoi(os.Getenv(EnvExit))
			proctest.Say("stopped pid=%d signal=%q", os.Getpid(), sig.String())
			return code
		default:
			proctest.Say("signal pid=%d signal=%q", os.Getpid(), sig.String())
		}
	}
	return 0
}

// hostPID is this process's PID in the outermost PID namespace that
// /proc/self/status lists (NSpid), the one the test sees.
func hostPID() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return os.Getpid()
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				if pid, err := strconv.Atoi(f[0]); err == nil {
					return pid
				}
			}
		}
	}
	return os.Getpid()
}

// moltService is a service written with the molt library, as the README
// says to run one under molt run: it takes the passed socket through
// package systemd, whose Ready sends READY=1 to molt run, and stops on
// SIGTERM. molt run upgrades it by starting a new generation 1.
func moltService() int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	name := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")[0] // Attach removes the variables
	upg, err := molt.New(molt.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "runchild:", err)
		return 5
	}
	defer upg.Stop()
	svc, err := systemd.Attach(upg, systemd.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "runchild:", err)
		return 5
	}
	defer svc.Close()
	ln, err := svc.Listener(name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "runchild:", err)
		return 5
	}
	srv := drain.NewHTTPServer(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pid=%d\n", os.Getpid())
	})})
	go srv.Serve(ln)
	proctest.Say("serving pid=%d fds=1 names=%s generation=%d", os.Getpid(), name, upg.Generation())
	if err := upg.Ready(); err != nil {
		fmt.Fprintln(os.Stderr, "runchild:", err)
		return 6
	}
	sig := <-sigs
	upg.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv.Drain(ctx)
	proctest.Say("stopped pid=%d signal=%q", os.Getpid(), sig.String())
	return 0
}
