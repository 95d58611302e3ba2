package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/moltgo/molt/control"
)

// opTakeover is the takeover command: not a request of the control
// protocol, but a program started here that takes over by itself.
const opTakeover control.Op = "takeover"

// Environment variables the molt library reads in the program (see
// molt.Options.TakeoverFrom).
const (
	envTakeoverFrom   = "MOLT_TAKEOVER_FROM"
	envTakeoverReport = "MOLT_TAKEOVER_REPORT"
)

// takeoverExit bounds how long a program whose takeover failed gets to
// exit on its own before molt kills it.
const takeoverExit = 5 * time.Second

// parseTakeover finishes parsing the takeover command: -s names the
// takeover socket (no default: it is not the control socket) and a
// program follows "--".
func parseTakeover(cfg config) (config, error) {
	switch {
	case cfg.socket == "":
		return cfg, errors.New("takeover: no takeover socket: use -s PATH (the service's Options.TakeoverSocket)")
	case len(cfg.program) == 0 || cfg.program[0] == "":
		return cfg, errors.New("takeover: no program: molt -s PATH takeover -- PROGRAM [ARGS...]")
	case cfg.ifGen != 0:
		return cfg, errors.New("--if-generation is for upgrade, not for takeover")
	case cfg.timeout < 0:
		return cfg, fmt.Errorf("--timeout %v is negative", cfg.timeout)
	case cfg.timeout == 0:
		cfg.timeout = defaultUpgradeTimeout
	}
	return cfg, nil
}

// takeoverResult is the --json output of a takeover.
type takeoverResult struct {
	OK         bool   `json:"ok"`
	Code       string `json:"code"` // "ok", "failed", "no_reply"
	Op         string `json:"op"`
	PID        int    `json:"pid,omitempty"` // the program's
	Generation uint64 `json:"generation,omitempty"`
	Error      string `json:"error,omitempty"`
}

// runTakeover starts the program in a session of its own (it outlives
// molt), with the takeover socket and a pipe on which the library reports
// one line, and waits for that line, the program's exit, or ctx.
func runTakeover(ctx context.Context, cfg config, stdout, stderr io.Writer) int {
	r, w, err := os.Pipe()
	if err != nil {
		return takeoverFailed(cfg, stdout, stderr, 0, exitFailed, "failed", err.Error())
	}
	defer r.Close()
	cmd := exec.Command(cfg.program[0], cfg.program[1:]...)
	cmd.Env = append(os.Environ(), envTakeoverFrom+"="+cfg.socket, envTakeoverReport+"=3")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = newSession()
	err = cmd.Start()
	w.Close() // the program has its copy: the pipe ends when it writes its line or exits
	if err != nil {
		return takeoverFailed(cfg, stdout, stderr, 0, exitFailed, "failed", err.Error())
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // ends when the program exits; molt may return first
	lines := make(chan string, 1)
	go func() { // ends at the line or the pipe's end
		line, _ := bufio.NewReader(r).ReadString('\n')
		lines <- strings.TrimSuffix(line, "\n")
	}()

	var line string
	select {
	case line = <-lines:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-exited
		return takeoverFailed(cfg, stdout, stderr, pid, exitNoReply, "no_reply",
			fmt.Sprintf("pid %d did not take over within %v: killed", pid, cfg.timeout))
	}
	switch verb, rest, _ := strings.Cut(line, " "); verb {
	case "ready":
		var gen uint64
		fmt.Sscan(strings.Fields(rest)[len(strings.Fields(rest))-1], &gen)
		cmd.Process.Release() // it serves now, and outlives molt
		if cfg.json {
			writeJSON(stdout, takeoverResult{OK: true, Code: "ok", Op: string(opTakeover), PID: pid, Generation: gen})
		} else {
			fmt.Fprintf(stdout, "taken over: pid %d serves as generation %d (the generation it took over from drains and exits)\n", pid, gen)
		}
		return exitOK
	case "failed":
		return takeoverFailed(cfg, stdout, stderr, pid, exitFailed, "failed", reap(cmd, exited, rest))
	}
	// No line: the program exited, or closed the descriptor, without a
	// word (it failed before New, or does not use molt).
	return takeoverFailed(cfg, stdout, stderr, pid, exitFailed, "failed",
		reap(cmd, exited, "it did not take over (no report from molt in it)"))
}

// reap waits for a program whose takeover failed to exit, kills it after
// takeoverExit, and adds how it ended to reason.
func reap(cmd *exec.Cmd, exited <-chan error, reason string) string {
	t := time.NewTimer(takeoverExit)
	defer t.Stop()
	var err error
	select {
	case err = <-exited:
	case <-t.C:
		cmd.Process.Kill()
		err = <-exited
		reason += "; it did not exit and was killed"
	}
	if err != nil {
		return fmt.Sprintf("%s (%v)", reason, err)
	}
	return reason + " (exit status 0)"
}

func takeoverFailed(cfg config, stdout, stderr io.Writer, pid, status int, code, reason string) int {
	if cfg.json {
		writeJSON(stdout, takeoverResult{OK: false, Code: code, Op: string(opTakeover), PID: pid, Error: reason})
		return status
	}
	if pid != 0 {
		fmt.Fprintf(stderr, "molt: takeover failed: pid %d: %s\n", pid, reason)
	} else {
		fmt.Fprintf(stderr, "molt: takeover failed: %s\n", reason)
	}
	fmt.Fprintf(stderr, "molt: the generation serving %s goes on serving\n", cfg.socket)
	return status
}
