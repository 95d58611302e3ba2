package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/moltgo/molt/examples/grpc/internal/grpcload"
)

// TestUpgradesUnderRPCLoad builds the example and upgrades it 50 times
// while the counting client calls it over 4 connections with 16 RPCs in
// flight: grpc-go as in go.mod, no WaitForReady, retries disabled. It
// fails on any RPC that did not end OK and SERVING, and checks that every
// RPC started ended and that every generation served.
func TestUpgradesUnderRPCLoad(t *testing.T) {
	const upgrades = 50
	bin := filepath.Join(t.TempDir(), "server")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// Generous bounds: a loaded 2-core machine under -race is slow, and
	// a deadline that fires is a failure of the machine, not of the drain.
	const step = 2 * time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srv, err := grpcload.Start(bin, step, "-addr", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Kill()
	load, err := grpcload.StartLoad(srv.Addr, grpcload.Config{
		Conns: 4, Workers: 4, Timeout: step, MaxRPCs: 5_000_000,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Each generation answers at least 100 RPCs before the next upgrade:
	// progress, not a guessed time, paces the upgrades.
	upErr := grpcload.Upgrades(srv, upgrades, step, func() error { return load.WaitOK(ctx, 100) })
	counts := load.Stop()
	if upErr != nil {
		t.Fatal(upErr)
	}
	served, err := srv.Stop(step)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d upgrades: %v; the servers answered %d, the fewest by one generation %d",
		upgrades, counts, served, srv.LeastServed())
	if counts.Failed() != 0 || counts.OK == 0 {
		t.Errorf("%d RPCs failed, %d OK; want 0 and more than 0", counts.Failed(), counts.OK)
	}
	if counts.Started != counts.Finished() {
		t.Errorf("%d RPCs started, %d ended", counts.Started, counts.Finished())
	}
	if got := srv.Generations(); got != upgrades+1 {
		t.Errorf("%d generations were ready, want %d", got, upgrades+1)
	}
	if srv.LeastServed() <= 0 {
		t.Errorf("a generation answered no RPC")
	}
	if served != counts.OK {
		t.Errorf("the servers answered %d RPCs, the client got %d OK", served, counts.OK)
	}
}
