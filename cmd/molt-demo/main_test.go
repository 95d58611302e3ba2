package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestDemo builds the demo (with the race detector when the test has it),
// runs it with small settings and checks its report: no failed request,
// every upgrade done, PASS and exit status 0.
func TestDemo(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skipf("the demo's end-to-end test runs on Linux only (the left-behind check needs a child subreaper); this is %s", runtime.GOOS)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			t.Skip("the go command is not in PATH: cannot build the demo")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	bin := filepath.Join(t.TempDir(), "molt-demo")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.CommandContext(ctx, goTool, append(args, ".")...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}

	var out bytes.Buffer
	demo := exec.CommandContext(ctx, bin, "-upgrades", "3", "-duration", "3s", "-clients", "2")
	demo.Stdout = &out
	demo.Stderr = &out
	demo.WaitDelay = 10 * time.Second
	err = demo.Run()
	t.Logf("demo output:\n%s", out.String())
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("the demo did not finish in time: %v", ctx.Err())
	case errors.As(err, &exitErr):
		t.Fatalf("the demo failed: %v", err)
	case err != nil:
		t.Fatal(err)
	}

	report := out.String()
	for _, kind := range []string{"keep-alive", "new-connection"} {
		f := reportRow(t, report, kind)
		if len(f) != 4 || f[3] != "0" || f[1] == "0" {
			t.Errorf("%s row %q: want some requests and 0 failed", kind, strings.Join(f, " "))
		}
	}
	if f := reportRow(t, report, "upgrades done"); len(f) != 3 || f[2] != "3/3" {
		t.Errorf("upgrades row %q: want 3/3", strings.Join(f, " "))
	}
	if !strings.Contains(report, "\nPASS\n") {
		t.Error("the report does not say PASS")
	}
}

// reportRow returns the fields of the report line that starts with label.
func reportRow(t *testing.T, report, label string) []string {
	t.Helper()
	for line := range strings.Lines(report) {
		if strings.HasPrefix(strings.TrimSpace(line), label+" ") {
			return strings.Fields(line)
		}
	}
	t.Errorf("no %q row in the report", label)
	return nil
}
