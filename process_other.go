//go:build !unix

package molt

import "syscall"

func successorSysProcAttr() *syscall.SysProcAttr                      { return nil }
func withOwnProcessGroup(a *syscall.SysProcAttr) *syscall.SysProcAttr { return a }
func killGroup(int)                                                   {}
