package distribution

import (
	"bytes"
	"io"
	"sync"
	"testing"
)

// TestIndexPinConcurrentReads: every response reads the pinned index
// through a file of its own, so concurrent readers each get every byte.
func TestIndexPinConcurrentReads(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10)
	idx := NewIndex("c0ffee", data)
	if idx.open() != nil {
		t.Fatal("an index never pinned opened a file")
	}
	idx.Pin()
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for range 16 {
		wg.Go(func() {
			f := idx.open()
			if f == nil {
				errs <- "no file for a pinned index"
				return
			}
			defer f.Close()
			got, err := io.ReadAll(f)
			if err != nil || !bytes.Equal(got, data) {
				errs <- "read other bytes than the index's"
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}
