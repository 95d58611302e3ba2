//go:build unix

package main

import "syscall"

// newSession starts a program in a session of its own: a terminal's
// hang-up does not reach it when molt has exited.
func newSession() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }
