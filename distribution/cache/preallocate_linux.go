package cache

import (
	"errors"
	"os"
	"syscall"
)

// fallocate reserves size bytes of disk for f, leaving its size as it is
// (a temporary's size stays what the fill wrote): a full disk then refuses
// the fill before its first byte rather than half-way, and the file
// system allocates the blocks once instead of page by page as the fill
// writes (a cold download's largest cost). A file system without
// fallocate is written as it is.
// fallocKeepSize is FALLOC_FL_KEEP_SIZE, which package syscall lacks.
const fallocKeepSize = 0x01

func fallocate(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	sc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	var ferr error
	if err := sc.Control(func(fd uintptr) { ferr = syscall.Fallocate(int(fd), fallocKeepSize, 0, size) }); err != nil {
		return nil
	}
	if errors.Is(ferr, syscall.EOPNOTSUPP) || errors.Is(ferr, syscall.ENOSYS) {
		return nil
	}
	return ferr
}
