//go:build !linux

package e2e

import "syscall"

// childAttr: without Pdeathsig, children are killed by each test's cleanup only.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
