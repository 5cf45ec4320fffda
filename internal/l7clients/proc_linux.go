package l7clients

import "syscall"

// childAttr makes a child die with the test binary, so that a test killed
// by -timeout leaves no server behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
