// Package filesystem stores objects as files under one directory.
//
// Every access goes through an os.Root, so no key (and no symlink planted
// in the tree) can reach outside the directory. Writes are staged in a
// hidden temp dir and renamed into place, so readers see the old bytes or
// the new ones. All mutations of a key (Put, Delete) hold an flock on a
// lock file under a hidden dir while they check and publish, so
// conditional puts are atomic across goroutines and across processes that
// share the directory (on a local filesystem, or NFS with server-side
// locking).
package filesystem

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/uplinkhq/uplink/storage"
)

const (
	// Hidden dirs: keys cannot start with '.', so these never collide
	// with objects and List skips them.
	tmpDir  = ".tmp"
	lockDir = ".locks"

	// lockShards bounds the number of lock files. Lock files are never
	// unlinked (unlinking a flock file races with waiters on the old
	// inode), so one file per key would grow forever; two keys sharing a
	// shard only serialise their short commit sections.
	lockShards = 256

	// staleTmp is how old an orphaned temp file (from a crashed writer)
	// must be before New removes it.
	staleTmp = 24 * time.Hour

	dirPerm  = 0o755
	filePerm = 0o644
)

// Driver is a storage.Driver on a local directory. It is safe for
// concurrent use, and several Drivers (in one or many processes) may share
// a directory.
type Driver struct {
	root *os.Root
	// sem serialises this process's writers per lock shard, so at most one
	// goroutine per shard waits in flock and waiting honours ctx.
	sem [lockShards]chan struct{}
}

var _ storage.Driver = (*Driver)(nil)

// New opens (creating if needed) the directory dir as a store.
func New(dir string) (*Driver, error) {
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return nil, fmt.Errorf("filesystem: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("filesystem: %w", err)
	}
	for _, d := range []string{tmpDir, lockDir} {
		if err := root.MkdirAll(d, dirPerm); err != nil {
			root.Close()
			return nil, fmt.Errorf("filesystem: %w", err)
		}
	}
	d := &Driver{root: root}
	for i := range d.sem {
		d.sem[i] = make(chan struct{}, 1)
	}
	d.removeStaleTemps()
	return d, nil
}

// Close releases the directory handle. Objects already open stay usable.
func (d *Driver) Close() error { return d.root.Close() }

// Object is an open file. File returns the underlying *os.File so that an
// HTTP server can pass it to io.Copy and get sendfile(2); the caller must
// not close it, and must not use it concurrently with Read or Seek, which
// share its offset. The file keeps the bytes it was opened with even if
// the key is overwritten or deleted meanwhile.
type Object struct {
	f    *os.File
	info storage.Info
}

var _ storage.Object = (*Object)(nil)

func (o *Object) Read(p []byte) (int, error)                   { return o.f.Read(p) }
func (o *Object) Seek(offset int64, whence int) (int64, error) { return o.f.Seek(offset, whence) }
func (o *Object) Close() error                                 { return o.f.Close() }
func (o *Object) Info() storage.Info                           { return o.info }

// File returns the underlying file, for sendfile.
func (o *Object) File() *os.File { return o.f }

// Open opens key for reading.
func (d *Driver) Open(ctx context.Context, key string) (storage.Object, error) {
	if err := storage.CheckKey(ctx, key); err != nil {
		return nil, err
	}
	f, err := d.root.Open(key)
	if err != nil {
		return nil, mapErr("open", key, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		// A directory is a key prefix, not an object.
		err = fs.ErrNotExist
	}
	if err != nil {
		f.Close()
		return nil, mapErr("open", key, err)
	}
	return &Object{f: f, info: info(key, fi)}, nil
}

// Stat returns key's Info.
func (d *Driver) Stat(ctx context.Context, key string) (storage.Info, error) {
	if err := storage.CheckKey(ctx, key); err != nil {
		return storage.Info{}, err
	}
	fi, err := d.root.Stat(key)
	if err == nil && !fi.Mode().IsRegular() {
		err = fs.ErrNotExist
	}
	if err != nil {
		return storage.Info{}, mapErr("stat", key, err)
	}
	return info(key, fi), nil
}

// Put writes r to key atomically, honouring cond.
func (d *Driver) Put(ctx context.Context, key string, r io.Reader, size int64, cond storage.Condition) (storage.Info, error) {
	if err := storage.CheckPut(ctx, "filesystem", key, cond); err != nil {
		return storage.Info{}, err
	}

	tmp, err := d.writeTemp(ctx, r, size)
	if err != nil {
		return storage.Info{}, fmt.Errorf("filesystem: put %s: %w", key, err)
	}
	published := false
	defer func() {
		if !published {
			d.root.Remove(tmp)
		}
	}()

	parent := path.Dir(key)
	if err := d.mkdirAll(parent); err != nil {
		return storage.Info{}, fmt.Errorf("filesystem: put %s: %w", key, err)
	}
	fi, err := d.publish(ctx, tmp, key, cond)
	if errors.Is(err, storage.ErrConditionFailed) {
		return storage.Info{}, err
	}
	if err != nil {
		return storage.Info{}, fmt.Errorf("filesystem: put %s: %w", key, err)
	}
	published = true
	// Make the rename durable. Best effort: the object is already visible.
	if dir, err := d.root.Open(parent); err == nil {
		dir.Sync()
		dir.Close()
	}
	return info(key, fi), nil
}

// writeTemp copies r into a new synced temp file and returns its name.
func (d *Driver) writeTemp(ctx context.Context, r io.Reader, size int64) (name string, err error) {
	name = tmpDir + "/" + rand.Text()
	f, err := d.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if errors.Is(err, fs.ErrNotExist) {
		// Someone removed the temp dir; recreate it once.
		if err = d.root.MkdirAll(tmpDir, dirPerm); err == nil {
			f, err = d.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
		}
	}
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			d.root.Remove(name)
		}
	}()

	src := storage.ContextReader(ctx, r)
	if size >= 0 {
		src = io.LimitReader(src, size)
	}
	n, err := io.Copy(f, src)
	if err != nil {
		return "", err
	}
	if size >= 0 && n < size {
		return "", fmt.Errorf("short body: %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	// Data must be on disk before the rename makes it visible.
	if err := f.Sync(); err != nil {
		return "", err
	}
	return name, f.Close()
}

// publish renames tmp onto key under the key's lock, after checking cond.
func (d *Driver) publish(ctx context.Context, tmp, key string, cond storage.Condition) (fs.FileInfo, error) {
	unlock, err := d.lock(ctx, key)
	if err != nil {
		return nil, err
	}
	defer unlock()

	cur, err := d.root.Lstat(key)
	exists := err == nil && cur.Mode().IsRegular()
	if err != nil && !isNotExist(err) {
		return nil, err
	}
	switch {
	case cond.IfAbsent && exists:
		return nil, fmt.Errorf("%w: %s exists", storage.ErrConditionFailed, key)
	case cond.IfMatch != "" && !exists:
		return nil, fmt.Errorf("%w: %s does not exist", storage.ErrConditionFailed, key)
	case cond.IfMatch != "" && etag(cur) != cond.IfMatch:
		return nil, fmt.Errorf("%w: %s changed", storage.ErrConditionFailed, key)
	}

	// The ETag is (inode, size, mtime). Inodes are reused once a version is
	// replaced and kernel timestamps are coarse, so a later version could
	// repeat an old ETag (ABA) and let a stale IfMatch win. Stamping each
	// version with a fine-grained time, strictly after the version it
	// replaces, keeps ETags unique per key.
	mtime := time.Now()
	if exists && !mtime.After(cur.ModTime()) {
		mtime = cur.ModTime().Add(time.Nanosecond)
	}
	if err := d.root.Chtimes(tmp, mtime, mtime); err != nil {
		return nil, err
	}
	fi, err := d.root.Lstat(tmp)
	if err != nil {
		return nil, err
	}

	// A concurrent Delete may prune the (empty) parent between MkdirAll and
	// Rename: recreate it and retry.
	for attempt := 0; ; attempt++ {
		err = d.root.Rename(tmp, key)
		if err == nil || !errors.Is(err, fs.ErrNotExist) || attempt == retries {
			return fi, err
		}
		if err := d.mkdirAll(path.Dir(key)); err != nil {
			return nil, err
		}
	}
}

// retries bounds how often a write retries after a concurrent Delete
// pruned the directory it was creating or writing into.
const retries = 10

// mkdirAll is MkdirAll, retried when a concurrent Delete prunes a
// directory it has just created or found (ENOENT, or EEXIST when the
// directory vanished before Root.MkdirAll could check it).
func (d *Driver) mkdirAll(dir string) error {
	for attempt := 0; ; attempt++ {
		err := d.root.MkdirAll(dir, dirPerm)
		if err == nil || attempt == retries ||
			!errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
}

// rmdir removes dir only if it is an empty directory: unlike Root.Remove
// it never removes a file that a racing Put put where the directory was.
func (d *Driver) rmdir(dir string) error {
	parent, err := d.root.Open(path.Dir(dir))
	if err != nil {
		return err
	}
	defer parent.Close()
	return unix.Unlinkat(int(parent.Fd()), path.Base(dir), unix.AT_REMOVEDIR)
}

// List returns the objects whose key starts with prefix, sorted.
func (d *Driver) List(ctx context.Context, prefix string) ([]storage.Info, error) {
	if err := storage.CheckPrefix(ctx, prefix); err != nil {
		return nil, err
	}
	// Walk only the deepest directory the prefix names completely.
	start := "."
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = prefix[:i]
	}
	var out []storage.Info
	err := fs.WalkDir(d.root.FS(), start, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			// Missing start dir, or entries removed while we walk.
			if isNotExist(err) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		if strings.HasPrefix(e.Name(), ".") {
			if e.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if e.IsDir() {
			if !strings.HasPrefix(p+"/", prefix) && !strings.HasPrefix(prefix, p+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if !e.Type().IsRegular() || !strings.HasPrefix(p, prefix) {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			if isNotExist(err) {
				return nil
			}
			return err
		}
		out = append(out, info(p, fi))
		return nil
	})
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
			return nil, err
		}
		return nil, fmt.Errorf("filesystem: list %q: %w", prefix, err)
	}
	// WalkDir orders by path segment ("a/b" before "a.b"); keys sort as
	// plain strings.
	storage.SortByKey(out)
	return out, nil
}

// Delete removes key and then any parent directories left empty.
func (d *Driver) Delete(ctx context.Context, key string) error {
	if err := storage.CheckKey(ctx, key); err != nil {
		return err
	}
	removed, err := d.remove(ctx, key)
	if !removed {
		return err
	}
	// Best effort: rmdir fails on a non-empty dir, and a Put racing with
	// us recreates what it needs.
	for dir := path.Dir(key); dir != "."; dir = path.Dir(dir) {
		if d.rmdir(dir) != nil {
			break
		}
	}
	return nil
}

func (d *Driver) remove(ctx context.Context, key string) (removed bool, err error) {
	unlock, err := d.lock(ctx, key)
	if err != nil {
		return false, err
	}
	defer unlock()
	fi, err := d.root.Lstat(key)
	if err == nil && fi.IsDir() {
		return false, nil // a prefix, not an object
	}
	if err == nil {
		err = d.root.Remove(key)
	}
	if err != nil {
		if isNotExist(err) {
			return false, nil
		}
		return false, fmt.Errorf("filesystem: delete %s: %w", key, err)
	}
	return true, nil
}

// lock takes the process-local and then the cross-process lock of key's
// shard.
func (d *Driver) lock(ctx context.Context, key string) (unlock func(), err error) {
	sum := sha256.Sum256([]byte(key))
	shard := sum[0]
	select {
	case d.sem[shard] <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	release := func() { <-d.sem[shard] }

	name := fmt.Sprintf("%s/%02x", lockDir, shard)
	f, err := d.root.OpenFile(name, os.O_RDWR|os.O_CREATE, filePerm)
	if errors.Is(err, fs.ErrNotExist) {
		if err = d.root.MkdirAll(lockDir, dirPerm); err == nil {
			f, err = d.root.OpenFile(name, os.O_RDWR|os.O_CREATE, filePerm)
		}
	}
	if err != nil {
		release()
		return nil, fmt.Errorf("filesystem: lock: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		release()
		return nil, fmt.Errorf("filesystem: flock: %w", err)
	}
	// Closing the descriptor releases the flock.
	return func() { f.Close(); release() }, nil
}

// removeStaleTemps deletes temp files orphaned by crashed writers.
func (d *Driver) removeStaleTemps() {
	entries, err := fs.ReadDir(d.root.FS(), tmpDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleTmp {
			d.root.Remove(tmpDir + "/" + e.Name())
		}
	}
}

func info(key string, fi fs.FileInfo) storage.Info {
	return storage.Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime(), ETag: etag(fi)}
}

// etag is derived from inode, size and mtime: every version is a new file
// renamed into place with a unique mtime (see publish), so it changes on
// every write without hashing the content.
func etag(fi fs.FileInfo) string {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return strconv.FormatUint(ino, 16) + "-" +
		strconv.FormatInt(fi.Size(), 16) + "-" +
		strconv.FormatInt(fi.ModTime().UnixNano(), 16)
}

// isNotExist also treats ENOTDIR ("a/b" when "a" is an object) as missing.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

func mapErr(op, key string, err error) error {
	if isNotExist(err) {
		return &storage.PathNotFoundError{Key: key}
	}
	return fmt.Errorf("filesystem: %s %s: %w", op, key, err)
}
