package main

import "syscall"

// childAttr makes the kernel kill a child when chaos dies, so no replica outlives a run.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
