package distribution

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Pin copies the index into an anonymous in-memory file (memfd), from
// which each response is sent by sendfile: the kernel then sends the
// pages without copying 1 MB from the heap per response, which was most
// of uplink's CPU for a cached index. Call it once, before the Index is
// shared. Without memfd the index is written from memory as before.
//
// The memfd is closed by its finalizer once nothing holds the Index, so
// a response that holds it can always reopen it.
func (x *Index) Pin() {
	fd, err := unix.MemfdCreate("uplink-index", unix.MFD_CLOEXEC)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "uplink-index")
	if n, err := f.Write(x.Data); err != nil || n != len(x.Data) {
		f.Close()
		return
	}
	x.file = f
}

// open returns a file of the index with its own offset (a memfd reopened
// through /proc gets a new open file description), or nil.
func (x *Index) open() *os.File {
	if x.file == nil {
		return nil
	}
	f, err := os.Open("/proc/self/fd/" + strconv.Itoa(int(x.file.Fd())))
	if err != nil {
		return nil
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != int64(len(x.Data)) {
		f.Close()
		return nil
	}
	return f
}
