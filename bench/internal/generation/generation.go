// Package generation is the life of one molt generation in the benchmark
// servers (drainbench's molt system and the soak service): serve until an
// upgrade took over or a signal stops it, then drain.
package generation

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/moltgo/molt"
)

// Drainer is what a generation drains when it ends (a *drain.HTTPServer).
type Drainer interface {
	Drain(ctx context.Context) error
}

// End says how a generation ended.
type End struct {
	Reason   string        // "upgraded", "stopped", "signal terminated", "serve ended: …"
	Drain    time.Duration // how long the drain took
	DrainErr error         // what the drain returned
}

// Run serves until the generation ends. On SIGHUP from sigs it calls
// upgrade in a goroutine of its own (a failed upgrade leaves this
// generation serving); another signal, or served delivering the serving
// loop's end, stops upg for good; upg.Exit ends it after an upgrade. Then
// it drains ds within drainTimeout, stops upg and waits for the upgrades
// it started.
func Run(upg *molt.Upgrader, ds Drainer, sigs <-chan os.Signal, served <-chan error,
	upgrade func(*molt.Upgrader), drainTimeout time.Duration) End {
	var upgrades sync.WaitGroup
	var end End
loop:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGHUP {
				upgrades.Go(func() { upgrade(upg) })
				continue
			}
			end.Reason = "signal " + s.String()
			upg.Stop() // for good: interrupt an upgrade, close the listener
			break loop
		case <-upg.Exit():
			end.Reason = upg.Reason().String()
			break loop
		case err := <-served:
			end.Reason = fmt.Sprintf("serve ended: %v", err)
			upg.Stop()
			break loop
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	start := time.Now()
	end.DrainErr = ds.Drain(ctx)
	end.Drain = time.Since(start)
	upg.Stop()
	upgrades.Wait()
	return end
}
