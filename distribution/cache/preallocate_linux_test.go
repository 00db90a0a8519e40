package cache

import (
	"os"
	"syscall"
	"testing"
)

// The disk space of a fill is reserved before its first byte is written.
func TestFallocateReservesTheSize(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "fill")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 8 << 20
	if err := fallocate(f, size); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 < size || st.Size != 0 {
		t.Fatalf("%d bytes of disk reserved for a fill of %d, size %d", st.Blocks*512, size, st.Size)
	}
}
