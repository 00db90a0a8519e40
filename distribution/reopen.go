package distribution

import (
	"os"
	"strconv"
)

// Reopen opens f again through /proc (Linux): a new open file description
// with an offset of its own, which sendfile can advance without moving
// f's, and which works after f's name was removed or renamed.
func Reopen(f *os.File) (*os.File, error) {
	return os.Open("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
}
