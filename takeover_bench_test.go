//go:build linux

package molt_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/proctest"
)

// The takeover's cost beside the forked successor's: the same successor
// role, started by Upgrade or by the benchmark and taking over, measures
// the time from before its New to after its Ready returned (the HELLO,
// the inventory, the claims, READY and the ACK), with n listeners.

const envBenchListeners = "MOLT_TEST_BENCH_LISTENERS"

func init() { roles["handoff-bench"] = roleHandoffBench }

// roleHandoffBench claims the n listeners of the inventory, becomes
// ready, reports the time that took, and serves until SIGTERM.
func roleHandoffBench() int {
	start := time.Now()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	u := mustNew(molt.Options{Logger: roleLogger(), ReadyTimeout: time.Minute, MaxDraining: -1})
	n, _ := strconv.Atoi(os.Getenv(envBenchListeners))
	for range n {
		if _, err := u.Listen("tcp", "127.0.0.1:0"); err != nil {
			proctest.Say("listen-error err=%q", err.Error())
			return 11
		}
	}
	if err := u.Ready(); err != nil {
		proctest.Say("ready-error err=%q", err.Error())
		return 12
	}
	proctest.Say("took pid=%d ns=%d took_over=%t", os.Getpid(), time.Since(start).Nanoseconds(), u.TookOver())
	<-term
	u.Stop()
	return 0
}

// BenchmarkTakeover reports the successor's New-to-Ready time, p50 and
// maximum over b.N hand-offs (run with -benchtime=20x), for a forked
// successor and for a taker, at 10 and 10,000 listeners.
func BenchmarkTakeover(b *testing.B) {
	for _, n := range []int{10, 10000} {
		for _, mode := range []string{"fork", "takeover"} {
			b.Run(fmt.Sprintf("listeners=%d/%s", n, mode), func(b *testing.B) { benchHandoff(b, n, mode == "takeover") })
		}
	}
}

func benchHandoff(b *testing.B, n int, takeover bool) {
	sock := filepath.Join(proctest.ShortDir(b), "t.sock")
	ev, w := pipe(b)
	env := []string{envRole + "=handoff-bench", envBenchListeners + "=" + strconv.Itoa(n)}
	var took []time.Duration
	for b.Loop() {
		b.StopTimer()
		u, err := molt.New(molt.Options{
			Logger: roleLogger(), ReadyTimeout: time.Minute, TakeoverSocket: sock,
			Command: func(cmd *exec.Cmd) error {
				cmd.Env, cmd.Stdout = append(cmd.Env, env...), w
				return nil
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		for range n {
			if _, err := u.Listen("tcp", "127.0.0.1:0"); err != nil {
				b.Fatal(err)
			}
		}
		if err := u.Ready(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		var taker *exec.Cmd
		if takeover {
			taker = exec.Command(os.Args[0])
			taker.Env = append(os.Environ(), append(env, "MOLT_TAKEOVER_FROM="+sock)...)
			taker.Stdout, taker.Stderr = w, os.Stderr
			if err := taker.Start(); err != nil {
				b.Fatal(err)
			}
		} else if err := u.Upgrade(context.Background()); err != nil {
			b.Fatal(err)
		}
		r := ev.Wait(b, "took")
		b.StopTimer()
		ns, _ := strconv.ParseInt(r["ns"], 10, 64)
		took = append(took, time.Duration(ns))
		if r["took_over"] != strconv.FormatBool(takeover) {
			b.Fatalf("the successor reports took_over=%s", r["took_over"])
		}
		<-u.Exit()
		u.Stop()
		pid, _ := strconv.Atoi(r["pid"])
		syscall.Kill(pid, syscall.SIGTERM)
		if taker != nil {
			taker.Wait()
		} else {
			proctest.AwaitGone(pid, proctest.Patience)
		}
		b.StartTimer()
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(took[len(took)-1].Nanoseconds()), "max-ns")
	b.ReportMetric(0, "ns/op")
}
