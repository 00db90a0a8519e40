package distribution

import (
	"bytes"
	"io"
	"runtime"
	"testing"
	"time"
)

// A file given back is the next response's, read from the start.
func TestIndexFileReusedFromStart(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10)
	idx := NewIndex("c0ffee", data)
	if idx.open() != nil {
		t.Fatal("an index without a file opened one")
	}
	if err := idx.KeepFile(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	f := idx.open()
	if _, err := io.ReadFull(f, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	idx.done(f)
	g := idx.open()
	if g != f {
		t.Fatal("the file given back was not reused")
	}
	got, err := io.ReadAll(g)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reused file: %d bytes, %v", len(got), err)
	}
	idx.done(g)
}

// Files held open by indexes stay within indexFilesMax, and are closed
// once nothing holds their indexes; a small index keeps none.
func TestIndexFilesBounded(t *testing.T) {
	settleIndexFiles(t, 0) // the files of earlier tests' indexes
	base := indexFilesOpen.Load()
	old := indexFilesMax
	indexFilesMax = base + 2
	t.Cleanup(func() { indexFilesMax = old })
	dir := t.TempDir()
	data := bytes.Repeat([]byte{1}, indexFileMin)

	small := NewIndex("c0ffee", data[:1000])
	if err := small.KeepFile(dir); err != nil || small.open() != nil {
		t.Fatalf("a small index kept a file (%v)", err)
	}
	a, b, c := NewIndex("a", data), NewIndex("b", data), NewIndex("c", data)
	if err := a.KeepFile(dir); err != nil {
		t.Fatal(err)
	}
	if err := b.KeepFile(dir); err != nil {
		t.Fatal(err)
	}
	if err := c.KeepFile(dir); err == nil || c.open() != nil {
		t.Fatal("an index over the bound kept a file")
	}
	// At the bound, a file given back is closed, not kept for reuse.
	f := a.open()
	a.done(f)
	if n := indexFilesOpen.Load(); n != base+2 {
		t.Fatalf("%d files held, bound %d", n, base+2)
	}
	if _, err := f.Stat(); err == nil {
		t.Fatal("a file over the bound stayed open")
	}
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
	a, b = nil, nil
	if !settleIndexFiles(t, base) {
		t.Fatalf("%d files still held after their indexes were dropped, want %d", indexFilesOpen.Load(), base)
	}
}

// settleIndexFiles collects garbage until the files held are want, and
// says whether they came to that.
func settleIndexFiles(t *testing.T, want int64) bool {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if indexFilesOpen.Load() == want {
			return true
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	return false
}
