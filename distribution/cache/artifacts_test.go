package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/filesystem"
)

// countingStorage counts the opens of the storage under it; gate, when
// set, holds every first read; failAfter, when set, fails reads past that
// many bytes.
type countingStorage struct {
	storage.Getter
	opens     atomic.Int32
	gate      chan struct{}
	failAfter int64
}

func (s *countingStorage) Open(ctx context.Context, key string) (storage.Object, error) {
	s.opens.Add(1)
	obj, err := s.Getter.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	return &countedObject{Object: obj, s: s}, nil // hides File(): remote storage
}

type countedObject struct {
	storage.Object
	s    *countingStorage
	read int64
}

func (o *countedObject) Read(p []byte) (int, error) {
	if o.read == 0 && o.s.gate != nil {
		<-o.s.gate
	}
	if o.s.failAfter > 0 && o.read >= o.s.failAfter {
		return 0, errors.New("storage broke")
	}
	if o.s.failAfter > 0 && int64(len(p)) > o.s.failAfter-o.read {
		p = p[:o.s.failAfter-o.read]
	}
	n, err := o.Object.Read(p)
	o.read += int64(n)
	return n, err
}

const testCommit = "0123456789abcdef0123456789abcdef01234567"

var acmeHello = artifact.App{Org: "acme", Name: "hello"}

func newArtifactStore(t *testing.T, files map[string]int) *countingStorage {
	d, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for name, size := range files {
		body := bytes.Repeat([]byte{byte(len(name))}, size)
		if _, err := d.Put(t.Context(), artifact.Key(acmeHello, testCommit, "x86_64", name), bytes.NewReader(body), int64(size), storage.Condition{}); err != nil {
			t.Fatal(err)
		}
	}
	return &countingStorage{Getter: d}
}

func newArtifacts(t *testing.T, s *countingStorage, dir string, max int64) *Artifacts {
	t.Helper()
	c, err := NewArtifacts(&distribution.Repositories{Storage: s}, dir, max, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pkgReq(file string) distribution.Request {
	return distribution.Request{Ref: testCommit, Org: "acme", App: "hello", Arch: "x86_64", File: file}
}

var atCommit = ref.Resolution{Kind: ref.KindCommit, Commit: testCommit}

// get reads file through c, and says whether it came from a file.
func get(t *testing.T, c *Artifacts, file string) (body []byte, fromFile bool, err error) {
	t.Helper()
	pkg, err := c.Package(t.Context(), pkgReq(file), atCommit)
	if err != nil {
		return nil, false, err
	}
	defer pkg.Close()
	if f := pkg.File(); f != nil {
		body, err = io.ReadAll(f)
		return body, true, err
	}
	body, err = io.ReadAll(pkg)
	if err == nil {
		err = pkg.Err()
	}
	if err == nil && int64(len(body)) != pkg.Size {
		err = io.ErrUnexpectedEOF
	}
	return body, false, err
}

func cachedFiles(t *testing.T, dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestArtifactsFillOnceUnderHerd(t *testing.T) {
	s := newArtifactStore(t, map[string]int{"a.apk": 300 << 10})
	s.gate = make(chan struct{})
	c := newArtifacts(t, s, t.TempDir(), 1<<20)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			body, _, err := get(t, c, "a.apk")
			if err != nil || len(body) != 300<<10 {
				t.Errorf("%d bytes, %v", len(body), err)
			}
		})
	}
	for s.opens.Load() == 0 {
		runtime.Gosched()
	}
	close(s.gate)
	wg.Wait()
	if n := s.opens.Load(); n != 1 {
		t.Fatalf("%d storage reads under a herd of 50, want 1", n)
	}
	body, fromFile, err := get(t, c, "a.apk")
	if err != nil || !fromFile || len(body) != 300<<10 {
		t.Fatalf("second read: %d bytes, from a file %v, %v", len(body), fromFile, err)
	}
	if n := s.opens.Load(); n != 1 {
		t.Fatalf("%d storage reads after a hit, want 1", n)
	}
}

func TestArtifactsHalfWrittenNotServed(t *testing.T) {
	s := newArtifactStore(t, map[string]int{"a.apk": 1000})
	dir := t.TempDir()
	// What kill -9 leaves: a temporary, and a file renamed in place whose
	// size is not the one in its name.
	hash := artifactHash(acmeHello, testCommit, "x86_64", "a.apk")
	os.WriteFile(filepath.Join(dir, artifactTemp+"123"), []byte("half"), 0o644)
	os.WriteFile(filepath.Join(dir, artifactName(hash, 1000, `"x"`)), []byte("half"), 0o644)
	c := newArtifacts(t, s, dir, 1<<20)
	if names := cachedFiles(t, dir); len(names) != 0 {
		t.Fatalf("left at start: %v", names)
	}
	body, fromFile, err := get(t, c, "a.apk")
	if err != nil || fromFile || len(body) != 1000 || s.opens.Load() != 1 {
		t.Fatalf("%d bytes, from a file %v, %v, %d reads", len(body), fromFile, err, s.opens.Load())
	}
}

func TestArtifactsEvictionKeepsBound(t *testing.T) {
	files := map[string]int{}
	for i := range 5 {
		files[fmt.Sprint(i, ".apk")] = 400
	}
	s := newArtifactStore(t, files)
	dir := t.TempDir()
	c := newArtifacts(t, s, dir, 1000)
	for i := range 5 {
		if _, _, err := get(t, c, fmt.Sprint(i, ".apk")); err != nil {
			t.Fatal(err)
		}
		waitFilled(t, c, i+1)
		var total int64
		for _, name := range cachedFiles(t, dir) {
			fi, _ := os.Stat(filepath.Join(dir, name))
			total += fi.Size()
		}
		if total > 1000 || c.size > 1000 {
			t.Fatalf("%d bytes on disk (%d counted), bound 1000", total, c.size)
		}
	}
	if c.lru.Len() != 2 {
		t.Fatalf("%d files kept, want 2", c.lru.Len())
	}
	if _, fromFile, _ := get(t, c, "4.apk"); !fromFile {
		t.Fatal("the newest file was evicted")
	}
	if _, fromFile, _ := get(t, c, "0.apk"); fromFile {
		t.Fatal("the oldest file was kept")
	}
}

// waitFilled waits until n fills are done (a fill renames its file after
// the client read the last byte).
func waitFilled(t *testing.T, c *Artifacts, n int) {
	t.Helper()
	for {
		c.mu.Lock()
		running := len(c.fills)
		c.mu.Unlock()
		if running == 0 {
			return
		}
		runtime.Gosched()
	}
}

func TestArtifactsCorruptedRefilled(t *testing.T) {
	s := newArtifactStore(t, map[string]int{"a.apk": 1000})
	dir := t.TempDir()
	c := newArtifacts(t, s, dir, 1<<20)
	get(t, c, "a.apk")
	waitFilled(t, c, 1)
	names := cachedFiles(t, dir)
	if len(names) != 1 {
		t.Fatalf("cached %v", names)
	}
	os.Truncate(filepath.Join(dir, names[0]), 500)
	body, fromFile, err := get(t, c, "a.apk")
	if err != nil || fromFile || len(body) != 1000 || s.opens.Load() != 2 {
		t.Fatalf("truncated: %d bytes, from a file %v, %v, %d reads", len(body), fromFile, err, s.opens.Load())
	}
	waitFilled(t, c, 2)
	body, fromFile, err = get(t, c, "a.apk")
	if err != nil || !fromFile || len(body) != 1000 || s.opens.Load() != 2 {
		t.Fatalf("refilled: %d bytes, from a file %v, %v, %d reads", len(body), fromFile, err, s.opens.Load())
	}
}

func TestArtifactsRestartServesHits(t *testing.T) {
	s := newArtifactStore(t, map[string]int{"a.apk": 1000, "b.apk": 2000})
	dir := t.TempDir()
	c := newArtifacts(t, s, dir, 1<<20)
	for _, f := range []string{"a.apk", "b.apk"} {
		get(t, c, f)
	}
	waitFilled(t, c, 2)
	again := newArtifacts(t, s, dir, 1<<20)
	if again.size != 3000 {
		t.Fatalf("%d bytes indexed at start, want 3000", again.size)
	}
	for _, f := range []string{"a.apk", "b.apk"} {
		pkg, err := again.Package(t.Context(), pkgReq(f), atCommit)
		if err != nil || pkg.File() == nil || pkg.Commit != testCommit || !strings.HasPrefix(pkg.ETag, `"`) {
			t.Fatalf("%s after a restart: %+v %v", f, pkg, err)
		}
		pkg.Close()
	}
	if n := s.opens.Load(); n != 2 {
		t.Fatalf("%d storage reads, want 2", n)
	}
}

func TestArtifactsFailedFillNotCached(t *testing.T) {
	s := newArtifactStore(t, map[string]int{"a.apk": 200 << 10})
	s.failAfter = 100 << 10
	dir := t.TempDir()
	c := newArtifacts(t, s, dir, 1<<20)
	if _, _, err := get(t, c, "a.apk"); err == nil {
		t.Fatal("a fill that failed read as complete")
	}
	waitFilled(t, c, 1)
	if names := cachedFiles(t, dir); len(names) != 0 || c.lru.Len() != 0 {
		t.Fatalf("left after a failed fill: %v", names)
	}
	s.failAfter = 0
	if body, _, err := get(t, c, "a.apk"); err != nil || len(body) != 200<<10 {
		t.Fatalf("after the failure: %d bytes, %v", len(body), err)
	}
}

// Through a branch, a package is cached under the commit that answered.
func TestArtifactsBranchCachedUnderCommit(t *testing.T) {
	s := newArtifactStore(t, map[string]int{"a.apk": 1000})
	c := newArtifacts(t, s, t.TempDir(), 1<<20)
	branch := ref.Resolution{Kind: ref.KindBranch, Commit: strings.Repeat("f", 40), Fallback: []string{testCommit}}
	for range 2 {
		pkg, err := c.Package(t.Context(), pkgReq("a.apk"), branch)
		if err != nil || pkg.Commit != testCommit {
			t.Fatalf("%+v %v", pkg, err)
		}
		io.Copy(io.Discard, pkg)
		pkg.Close()
		waitFilled(t, c, 1)
	}
	if _, fromFile, err := get(t, c, "a.apk"); err != nil || !fromFile {
		t.Fatalf("not cached under the commit: %v", err)
	}
}
