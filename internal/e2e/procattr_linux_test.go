package e2e

import "syscall"

// childAttr makes a child die with the test binary, so a crashed or interrupted test run leaves no
// projector behind.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
