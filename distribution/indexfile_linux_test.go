package distribution

import (
	"bytes"
	"io"
	"testing"
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
