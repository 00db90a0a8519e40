package cache

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
)

// Artifacts is the local cache of immutable artifacts, a decorator of a
// distribution.Protocol's Package: the files of published commits are
// written to a directory bounded by bytes on their first read, and served
// from an *os.File after that (so the handler's sendfile path is taken).
//
// A file is filled once however many clients ask at the same time: the
// first opens it in storage, a fill copies it into a temporary file at
// storage speed, and every client (the first too) follows the fill,
// reading what is written so far. The fill is renamed into place only when
// complete, of the stored size and synced; its name keeps the key's hash,
// the CRC-32C of the bytes written, the size, and the Package's ModTime and
// ETag. Every hit checks the file's size at open; a file found at start
// (which a crash, a full disk or another process may have left wrong) is
// also hashed once, on its first hit, before anything is served from it. A
// file that does not match is removed and filled again; a fill that fails
// is removed and aborts the clients following it, nothing is cached.
//
// Files are evicted least-recently-used; a hit refreshes the file's mtime
// (at most once a minute) so the order rebuilt at start follows the last
// reads. Each replica has its own directory.
type Artifacts struct {
	distribution.Protocol
	dir string
	max int64
	log *slog.Logger

	mu       sync.Mutex
	lru      *simplelru.LRU[string, *artifactEntry]
	size     int64 // bytes of the files in lru
	dropping bool  // an eviction callback of a drop, not an eviction
	fills    map[string]*artifactFill

	hits, misses, filled, evictions, corrupt prometheus.Counter
	bytes                                    prometheus.Gauge
}

// artifactEntry is a cached file: what its name says it holds.
type artifactEntry struct {
	name    string
	size    int64
	modTime time.Time // the storage's, served as Last-Modified
	etag    string
	sum     string // hex CRC-32C of the bytes

	// A file found at start is hashed on its first hit, once however many
	// hit it together; a file this process filled and synced is trusted.
	unverified bool
	check      sync.Once
	bad        bool // set in check

	touched atomic.Int64 // UnixNano of the file's mtime as last set
}

// touchEvery bounds how often a hit refreshes a file's mtime.
const touchEvery = time.Minute

const artifactTemp = "tmp-"

// NewArtifacts caches at most maxBytes of inner's packages in dir. It
// removes the temporaries a crash left, and indexes the files there.
func NewArtifacts(inner distribution.Protocol, dir string, maxBytes int64, reg prometheus.Registerer) (*Artifacts, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c := &Artifacts{
		Protocol: inner, dir: dir, max: maxBytes, fills: map[string]*artifactFill{},
		hits: prometheus.NewCounter(prometheus.CounterOpts{Name: "uplink_artifact_cache_hits_total",
			Help: "Package reads served from the local artifact cache."}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{Name: "uplink_artifact_cache_misses_total",
			Help: "Package reads not in the local artifact cache (filled, or following a fill)."}),
		filled: prometheus.NewCounter(prometheus.CounterOpts{Name: "uplink_artifact_cache_fills_total",
			Help: "Files written to the local artifact cache, complete and verified."}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "uplink_artifact_cache_evictions_total",
			Help: "Files evicted from the local artifact cache to keep its size bound."}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{Name: "uplink_artifact_cache_corrupt_total",
			Help: "Files of the local artifact cache found with the wrong size or bytes, removed and filled again."}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "uplink_artifact_cache_bytes",
			Help: "Bytes of files in the local artifact cache."}),
		log: slog.Default(),
	}
	c.lru, _ = simplelru.NewLRU(math.MaxInt, func(_ string, e *artifactEntry) {
		os.Remove(filepath.Join(c.dir, e.name))
		c.size -= e.size
		if !c.dropping {
			c.evictions.Inc()
		}
	})
	if err := c.load(); err != nil {
		return nil, err
	}
	if reg != nil {
		reg.MustRegister(c.hits, c.misses, c.filled, c.evictions, c.corrupt, c.bytes)
	}
	return c, nil
}

// load removes temporaries and files whose names or sizes are wrong
// (names without a CRC-32C too: an earlier uplink's), and indexes the rest
// as unverified, the least recently read first.
func (c *Artifacts) load() error {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return err
	}
	type found struct {
		hash string
		e    *artifactEntry
	}
	var files []found
	for _, de := range ents {
		path := filepath.Join(c.dir, de.Name())
		hash, e, ok := parseArtifactName(de.Name())
		fi, err := de.Info()
		if !ok || err != nil || !fi.Mode().IsRegular() || fi.Size() != e.size {
			os.RemoveAll(path) // a temporary, or not ours, or truncated
			continue
		}
		e.unverified = true
		e.touched.Store(fi.ModTime().UnixNano())
		files = append(files, found{hash, e})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].e.touched.Load() < files[j].e.touched.Load() })
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range files {
		c.addLocked(f.hash, f.e)
	}
	return nil
}

// artifactName is <key hash>-<CRC-32C>-<size>-<ModTime in Unix ns, 0 when
// unknown>-<ETag in unpadded base64url>: the ETag last, as it may hold
// dashes, and short enough for the 255 bytes of a file name.
func artifactName(hash string, e *artifactEntry) string {
	mod := "0"
	if !e.modTime.IsZero() {
		mod = strconv.FormatInt(e.modTime.UnixNano(), 10)
	}
	return strings.Join([]string{hash, e.sum, strconv.FormatInt(e.size, 10), mod,
		base64.RawURLEncoding.EncodeToString([]byte(e.etag))}, "-")
}

func parseArtifactName(name string) (hash string, e *artifactEntry, ok bool) {
	parts := strings.SplitN(name, "-", 5)
	if len(parts) != 5 || len(parts[0]) != 64 || len(parts[1]) != crc32.Size*2 {
		return "", nil, false
	}
	size, err := strconv.ParseInt(parts[2], 10, 64)
	mod, err2 := strconv.ParseInt(parts[3], 10, 64)
	etag, err3 := base64.RawURLEncoding.DecodeString(parts[4])
	if err != nil || err2 != nil || err3 != nil || size < 0 {
		return "", nil, false
	}
	e = &artifactEntry{name: name, size: size, etag: string(etag), sum: parts[1]}
	if mod != 0 {
		e.modTime = time.Unix(0, mod)
	}
	return parts[0], e, true
}

// newContentSum is the checksum a file is verified with: CRC-32C, which
// storage systems use for data at rest (S3, GCS), runs at memory speed in
// hardware, where SHA-256 took a third of the CPU of a cold fill. It
// detects a disk's corruption; one who can write the cache directory can
// rewrite the names as well, whatever the hash.
func newContentSum() hash.Hash32 { return crc32.New(crc32.MakeTable(crc32.Castagnoli)) }

func artifactHash(app artifact.App, commit, arch, file string) string {
	sum := sha256.Sum256([]byte(artifact.Key(app, commit, arch, file)))
	return hex.EncodeToString(sum[:])
}

// Package serves a hit from the file, else fills it (or follows the fill
// running). It is asked for one commit (res.Commit): the branch fallbacks
// are distribution.Fallbacks', outside this cache, so a hit costs no
// storage request.
func (c *Artifacts) Package(ctx context.Context, req distribution.Request, res ref.Resolution) (*distribution.Package, error) {
	hash := artifactHash(req.Application(), res.Commit, req.Arch, req.File)
	if pkg := c.hit(hash, res.Commit); pkg != nil {
		return pkg, nil
	}
	return c.miss(ctx, hash, res.Commit, func(ctx context.Context) (*distribution.Package, error) {
		return c.Protocol.Package(ctx, req, res)
	})
}

// hit opens the cached file of hash, checking it; a file that does not
// match is removed (the caller fills it again).
func (c *Artifacts) hit(hash, commit string) *distribution.Package {
	c.mu.Lock()
	e, ok := c.lru.Get(hash)
	c.mu.Unlock()
	if !ok {
		return nil
	}
	path := filepath.Join(c.dir, e.name)
	f, err := os.Open(path)
	if err != nil { // removed under us: not served, not corrupt
		c.drop(hash, e)
		return nil
	}
	if why := e.mismatch(f); why != "" {
		f.Close()
		if c.drop(hash, e) {
			c.corrupt.Inc()
			c.log.Warn("artifact cache: corrupt file removed, filling it again from storage",
				"key", hash, "commit", commit, "file", path, "reason", why)
		}
		return nil
	}
	c.touch(e, path)
	c.hits.Inc()
	return distribution.NewPackage(commit, e.etag, &fileObject{f: f,
		info: storage.Info{Size: e.size, ModTime: e.modTime, ETag: e.etag}})
}

// mismatch says how f is not what e was stored as, "" when it is: its size
// on every hit, its bytes only for a file found at start, hashed once (the
// hits arriving meanwhile wait for the first).
func (e *artifactEntry) mismatch(f *os.File) string {
	fi, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	if fi.Size() != e.size {
		return fmt.Sprintf("%d bytes, stored as %d", fi.Size(), e.size)
	}
	if !e.unverified {
		return ""
	}
	e.check.Do(func() {
		h := newContentSum()
		_, err := io.Copy(h, io.NewSectionReader(f, 0, e.size))
		e.bad = err != nil || hex.EncodeToString(h.Sum(nil)) != e.sum
	})
	if e.bad {
		return "bytes do not match the CRC-32C stored with them"
	}
	return ""
}

// touch refreshes the file's mtime, at most once every touchEvery, so the
// order rebuilt at start follows the last reads.
func (c *Artifacts) touch(e *artifactEntry, path string) {
	now := time.Now()
	last := e.touched.Load()
	if now.UnixNano()-last < int64(touchEvery) || !e.touched.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	os.Chtimes(path, now, now)
}

// drop forgets e, a cached file that is not what it was stored as; false
// when it is gone already (dropped by another hit, or evicted).
func (c *Artifacts) drop(hash string, e *artifactEntry) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.lru.Peek(hash); !ok || cur != e {
		return false
	}
	c.dropping = true
	c.lru.Remove(hash)
	c.dropping = false
	c.bytes.Set(float64(c.size))
	return true
}

// miss follows the fill of hash, starting it with open when none runs.
func (c *Artifacts) miss(ctx context.Context, hash, commit string, open func(context.Context) (*distribution.Package, error)) (*distribution.Package, error) {
	c.misses.Inc()
	for {
		c.mu.Lock()
		if _, ok := c.lru.Peek(hash); ok { // filled since the lookup
			c.mu.Unlock()
			if pkg := c.hit(hash, commit); pkg != nil {
				return pkg, nil
			}
			continue
		}
		fl, running := c.fills[hash]
		if !running {
			fl = &artifactFill{opened: make(chan struct{})}
			fl.cond = sync.NewCond(&fl.mu)
			c.fills[hash] = fl
		}
		c.mu.Unlock()
		if !running {
			return c.start(ctx, hash, fl, open)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-fl.opened:
		}
		if errors.Is(fl.openErr, errNotFilled) {
			return open(ctx)
		}
		if fl.openErr != nil {
			return nil, fl.openErr
		}
		if pkg := fl.follow(); pkg != nil {
			return pkg, nil
		}
		// The fill ended (and was renamed or failed) before this client
		// joined it: look again.
	}
}

// start opens the package and fills the cache from it in the background;
// the caller follows the fill. A package too large for the cache (or when
// no temporary can be made) is served as it is, not cached.
func (c *Artifacts) start(ctx context.Context, hash string, fl *artifactFill, open func(context.Context) (*distribution.Package, error)) (*distribution.Package, error) {
	inner, err := open(context.WithoutCancel(ctx))
	var tmp *os.File
	if err == nil && inner.Size <= c.max {
		tmp, _ = os.CreateTemp(c.dir, artifactTemp+"*")
	}
	if tmp != nil && preallocate(tmp, inner.Size) != nil {
		// No room for it: the clients read storage, as for a file too large.
		tmp.Close()
		os.Remove(tmp.Name())
		tmp = nil
	}
	if tmp == nil {
		fl.openErr = err
		if err == nil {
			fl.openErr = errNotFilled
		}
		c.mu.Lock()
		delete(c.fills, hash)
		c.mu.Unlock()
		close(fl.opened)
		return inner, err
	}
	fl.f, fl.pkg = tmp, inner
	fl.refs = 1 // the fill's own
	close(fl.opened)
	pkg := fl.follow()
	go c.fill(hash, fl)
	return pkg, nil
}

// preallocate reserves a fill's disk space before its first byte; a test
// makes the disk full.
var preallocate = fallocate

// errNotFilled sends the clients waiting on a file that is not filled to
// storage themselves.
var errNotFilled = errors.New("artifact cache: not filled")

// fillChunk bounds a fill's reads from storage, and so its writes: each
// write to the file costs the file system a fixed price.
const fillChunk = 256 << 10

// fill copies the package into the temporary file, and renames it into
// place when it has all the bytes storage said it has.
func (c *Artifacts) fill(hash string, fl *artifactFill) {
	inner := fl.pkg
	buf := make([]byte, fillChunk)
	sum := newContentSum()
	var err error
	var written int64
	for {
		n, rerr := inner.Read(buf)
		if n > 0 {
			if _, werr := fl.f.WriteAt(buf[:n], written); werr != nil {
				err = werr
				break
			}
			written += int64(n)
			sum.Write(buf[:n])
			fl.progress(written)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	inner.Close()
	if err == nil && written != inner.Size {
		err = fmt.Errorf("artifact cache: %w after %d of %d bytes", io.ErrUnexpectedEOF, written, inner.Size)
	}
	e := &artifactEntry{size: inner.Size, modTime: inner.ModTime, etag: inner.ETag, sum: hex.EncodeToString(sum.Sum(nil))}
	e.name = artifactName(hash, e)
	e.touched.Store(time.Now().UnixNano())
	if err == nil {
		// On disk before the name says it is complete: a power cut never
		// leaves a file of the right size with the wrong bytes. The
		// clients are not waiting on it: they have every byte already.
		err = fl.f.Sync()
	}
	if err == nil {
		err = os.Rename(fl.f.Name(), filepath.Join(c.dir, e.name))
	}
	if err != nil {
		os.Remove(fl.f.Name())
	}
	c.mu.Lock()
	if err == nil {
		c.addLocked(hash, e)
		c.filled.Inc()
	}
	delete(c.fills, hash)
	c.mu.Unlock()
	fl.finish(err)
}

func (c *Artifacts) addLocked(hash string, e *artifactEntry) {
	if old, ok := c.lru.Peek(hash); ok && old.name == e.name {
		c.lru.Add(hash, e) // the same file: keep it, with what e knows of it
		return
	}
	c.dropping = true
	c.lru.Remove(hash)
	c.dropping = false
	c.lru.Add(hash, e)
	c.size += e.size
	for c.size > c.max && c.lru.Len() > 0 {
		c.lru.RemoveOldest()
	}
	c.bytes.Set(float64(c.size))
}

// artifactFill is a fill running: the temporary file, how much of it is
// written, and how it ended.
type artifactFill struct {
	opened  chan struct{} // closed when pkg and f are set, or openErr
	openErr error
	pkg     *distribution.Package
	f       *os.File

	mu      sync.Mutex
	cond    *sync.Cond
	written int64
	done    bool
	err     error
	refs    int // the fill and its followers; the last closes f
}

// follow returns a Package reading the fill, nil when it has ended.
func (fl *artifactFill) follow() *distribution.Package {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.refs == 0 {
		return nil
	}
	fl.refs++
	return distribution.NewPackage(fl.pkg.Commit, fl.pkg.ETag, &fillReader{fl: fl,
		info: storage.Info{Size: fl.pkg.Size, ModTime: fl.pkg.ModTime, ETag: fl.pkg.ETag}})
}

func (fl *artifactFill) progress(written int64) {
	fl.mu.Lock()
	fl.written = written
	fl.mu.Unlock()
	fl.cond.Broadcast()
}

func (fl *artifactFill) finish(err error) {
	fl.mu.Lock()
	fl.done, fl.err = true, err
	fl.mu.Unlock()
	fl.cond.Broadcast()
	fl.release()
}

func (fl *artifactFill) release() {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.refs--; fl.refs == 0 {
		fl.f.Close()
	}
}

// fillReader reads a fill as it is written: it waits for bytes not
// written yet, and fails when the fill fails.
type fillReader struct {
	fl     *artifactFill
	info   storage.Info
	off    int64
	closed bool
}

// wait returns how much of the fill is written once it is past off,
// or the error that ended the fill before it got there.
func (fl *artifactFill) wait(off int64) (int64, error) {
	fl.mu.Lock()
	for off >= fl.written && !fl.done {
		fl.cond.Wait()
	}
	written, err := fl.written, fl.err
	fl.mu.Unlock()
	if off >= written {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return written, err
	}
	return written, nil
}

func (r *fillReader) Read(p []byte) (int, error) {
	fl := r.fl
	if r.off >= r.info.Size {
		return 0, io.EOF
	}
	written, err := fl.wait(r.off)
	if err != nil {
		return 0, err
	}
	if int64(len(p)) > written-r.off {
		p = p[:written-r.off]
	}
	n, rerr := fl.f.ReadAt(p, r.off)
	r.off += int64(n)
	if rerr == io.EOF && n > 0 {
		rerr = nil
	}
	return n, rerr
}

// SendTo sends the rest of the fill to w as it is written: by sendfile
// from a file of its own (the temporary reopened through /proc, which
// keeps working after the rename), when w takes files (net/http's
// response). A cold download then costs the copy from storage into the
// file and no copy back out of it. Errors of the fill are returned as
// they are; anything else is w's.
func (r *fillReader) SendTo(w io.Writer) (int64, error) {
	rf, ok := w.(io.ReaderFrom)
	var f *os.File
	if ok {
		f, _ = distribution.Reopen(r.fl.f)
	}
	if f == nil {
		return io.Copy(w, struct{ io.Reader }{r})
	}
	defer f.Close()
	var sent int64
	for r.off < r.info.Size {
		written, err := r.fl.wait(r.off)
		if err != nil {
			return sent, err
		}
		if _, err := f.Seek(r.off, io.SeekStart); err != nil {
			return sent, err
		}
		n, err := rf.ReadFrom(&io.LimitedReader{R: f, N: written - r.off})
		r.off += n
		sent += n
		if err != nil {
			return sent, err
		}
		if n == 0 {
			return sent, io.ErrUnexpectedEOF
		}
	}
	return sent, nil
}

func (r *fillReader) Seek(offset int64, whence int) (int64, error) {
	off, err := storage.SeekOffset(r.off, r.info.Size, offset, whence)
	if err != nil {
		return 0, fmt.Errorf("artifact cache: %w", err)
	}
	r.off = off
	return off, nil
}

func (r *fillReader) Close() error {
	if !r.closed {
		r.closed = true
		r.fl.release()
	}
	return nil
}

func (r *fillReader) Info() storage.Info { return r.info }

// fileObject is a cached file.
type fileObject struct {
	f    *os.File
	info storage.Info
}

func (o *fileObject) Read(p []byte) (int, error)                   { return o.f.Read(p) }
func (o *fileObject) Seek(offset int64, whence int) (int64, error) { return o.f.Seek(offset, whence) }
func (o *fileObject) Close() error                                 { return o.f.Close() }
func (o *fileObject) Info() storage.Info                           { return o.info }
func (o *fileObject) File() *os.File                               { return o.f }
