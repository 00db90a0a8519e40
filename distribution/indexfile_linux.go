package distribution

import (
	"errors"
	"io"
	"os"
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// indexFile is an index's bytes in a file without a name, and files of it
// with offsets of their own, free for the next response.
type indexFile struct {
	f    *os.File
	free chan *os.File
}

// indexFilesFree bounds the files an index keeps open between responses;
// more concurrent responses open their own and close them after.
const indexFilesFree = 128

// indexFileMin is the smallest index kept in a file: copying a smaller one
// costs less than holding a file open for it.
const indexFileMin = 64 << 10

// indexFilesOpen counts the files held open by indexes between responses
// (each index's own, and those kept for reuse), at most indexFilesMax:
// the index cache, bounded by bytes, could otherwise hold a file for each
// of thousands of indexes. An index over the bound is written from memory.
var (
	indexFilesOpen atomic.Int64
	indexFilesMax  int64 = 4096
)

var errIndexFiles = errors.New("index files: too many open")

// KeepFile writes the index into a file without a name in dir (O_TMPFILE:
// a crash leaves nothing to clean up), from which each response is sent by
// sendfile: the kernel then sends page-cache pages instead of copying the
// whole index from the heap per response, which was half of uplink's CPU
// for a cached index at 1,024 connections. A file on disk rather than a
// memfd: measured, the receiving clients spent less per response on the
// page cache's pages. Call it once, before the Index is shared. On an
// error the index is written from memory, as without.
//
// The files are closed once nothing holds the Index (a cleanup), so a
// response that holds it can always read it. An index smaller than
// indexFileMin, or over the bound of files, keeps none.
func (x *Index) KeepFile(dir string) error {
	if len(x.Data) < indexFileMin {
		return nil
	}
	if !holdIndexFile() {
		return errIndexFiles
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		indexFilesOpen.Add(-1)
		return err
	}
	f := os.NewFile(uintptr(fd), "index "+x.Commit)
	if _, err := f.Write(x.Data); err != nil {
		f.Close()
		indexFilesOpen.Add(-1)
		return err
	}
	x.file = &indexFile{f: f, free: make(chan *os.File, indexFilesFree)}
	runtime.AddCleanup(x.file, closeIndexFiles, *x.file)
	return nil
}

// holdIndexFile counts one more file held open, unless at the bound.
func holdIndexFile() bool {
	if indexFilesOpen.Add(1) > indexFilesMax {
		indexFilesOpen.Add(-1)
		return false
	}
	return true
}

// closeIndexFiles closes the files of an index nothing holds any more.
func closeIndexFiles(files indexFile) {
	files.f.Close()
	n := int64(1)
	for {
		select {
		case f := <-files.free:
			f.Close()
			n++
		default:
			indexFilesOpen.Add(-n)
			return
		}
	}
}

// open returns a file of the index at offset 0 that no other response
// reads (a file reopened through /proc has an offset of its own), or nil.
// Give it back with done.
func (x *Index) open() *os.File {
	if x.file == nil {
		return nil
	}
	select {
	case f := <-x.file.free:
		indexFilesOpen.Add(-1)
		if _, err := f.Seek(0, io.SeekStart); err == nil {
			return f
		}
		f.Close()
	default:
	}
	f, err := Reopen(x.file.f)
	if err != nil {
		return nil
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != int64(len(x.Data)) {
		f.Close()
		return nil
	}
	return f
}

// done gives back a file open returned.
func (x *Index) done(f *os.File) {
	if holdIndexFile() {
		select {
		case x.file.free <- f:
			return
		default:
			indexFilesOpen.Add(-1)
		}
	}
	f.Close()
}
