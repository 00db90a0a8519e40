package testenv

import "syscall"

// sysProcAttr makes a server die with the test binary even when the binary
// dies without running cleanups (a timeout panic, a kill).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
