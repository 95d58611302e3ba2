package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestUpgradesUnderRPCLoad builds the example, upgrades it three times
// while clients call it, and expects no failed RPC.
func TestUpgradesUnderRPCLoad(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "server")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan map[string]string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			m := map[string]string{"event": f[0]}
			for _, kv := range f[1:] {
				k, v, _ := strings.Cut(kv, "=")
				m[k] = v
			}
			lines <- m
		}
	}()
	var pids []int
	t.Cleanup(func() {
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		cmd.Wait()
	})
	exits := 0
	next := func(event string) map[string]string {
		t.Helper()
		timeout := time.After(2 * time.Minute)
		for {
			select {
			case m, ok := <-lines:
				if !ok {
					t.Fatalf("server output ended waiting for %s", event)
				}
				if m["event"] == "exit" {
					exits++
				}
				if m["event"] == event {
					return m
				}
			case <-timeout:
				t.Fatalf("no %s line within 2 minutes", event)
			}
		}
	}
	ready := next("ready")
	pid, _ := strconv.Atoi(ready["pid"])
	pids = append(pids, pid)

	conn, err := grpc.NewClient(ready["addr"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	var (
		mu         sync.Mutex
		ok, failed int
		firstErr   error
		wg         sync.WaitGroup
	)
	stop := make(chan struct{})
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 1_000_000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
				cancel()
				mu.Lock()
				if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					failed++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					ok++
				}
				mu.Unlock()
			}
		}()
	}
	for range 3 {
		time.Sleep(200 * time.Millisecond) // let RPCs run on this generation
		syscall.Kill(pid, syscall.SIGHUP)
		r := next("ready")
		pid, _ = strconv.Atoi(r["pid"])
		pids = append(pids, pid)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("RPCs across 3 upgrades: %d ok, %d failed (first error: %v)", ok, failed, firstErr)
	if failed != 0 || ok == 0 {
		t.Errorf("%d ok, %d failed; want >0 and 0 (first error: %v)", ok, failed, firstErr)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for exits < len(pids) {
		next("exit")
	}
}
