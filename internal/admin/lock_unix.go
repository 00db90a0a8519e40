//go:build unix

package admin

import (
	"errors"
	"os"
	"syscall"
)

// lockFile takes an exclusive lock on f for as long as this process keeps
// it open; the kernel drops it when the process dies, even by SIGKILL.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// inUse reports whether a live process holds the lock on path.
func inUse(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}
