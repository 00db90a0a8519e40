package cache

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/filesystem"
)

// countingStorage counts the opens of the storage under it; gate, when
// set, holds every first read; failAfter, when set, fails reads past that
// many bytes; stallAfter, when set, blocks them.
type countingStorage struct {
	storage.Getter
	opens      atomic.Int32
	gate       chan struct{}
	failAfter  int64
	stallAfter int64
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
	if stop := max(o.s.failAfter, o.s.stallAfter); stop > 0 {
		if o.read >= stop && o.s.stallAfter > 0 {
			time.Sleep(time.Hour) // until the process is killed
		}
		if o.read >= stop {
			return 0, errors.New("storage broke")
		}
		if int64(len(p)) > stop-o.read {
			p = p[:stop-o.read]
		}
	}
	n, err := o.Object.Read(p)
	o.read += int64(n)
	return n, err
}

const testCommit = "0123456789abcdef0123456789abcdef01234567"

var acmeHello = artifact.App{Org: "acme", Name: "hello"}

func newArtifactStore(t *testing.T, files map[string]int) *countingStorage {
	return newArtifactStoreIn(t, t.TempDir(), files)
}

// newArtifactStoreIn stores files (name: size) in a filesystem storage in
// dir, each holding artifactBody.
func newArtifactStoreIn(t *testing.T, dir string, files map[string]int) *countingStorage {
	d, err := filesystem.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, size := range files {
		if _, err := d.Put(t.Context(), artifact.Key(acmeHello, testCommit, "x86_64", name), bytes.NewReader(artifactBody(name, size)), int64(size), storage.Condition{}); err != nil {
			t.Fatal(err)
		}
	}
	return &countingStorage{Getter: d}
}

// artifactBody is what storage holds for name: bytes that differ along it,
// so a copy at the wrong offset shows.
func artifactBody(name string, size int) []byte {
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(len(name) + i*7)
	}
	return body
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
	os.WriteFile(filepath.Join(dir, artifactName(hash, &artifactEntry{size: 1000, etag: `"x"`, sum: strings.Repeat("0", 64)})), []byte("half"), 0o644)
	// A file of the right size named before a checksum was kept: nothing
	// to check its bytes against.
	os.WriteFile(filepath.Join(dir, hash+"-4-227822"), []byte("full"), 0o644)
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
	if n := counter(c.corrupt); n != 1 {
		t.Fatalf("corrupt counted %v times, want 1", n)
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

// Through a branch (Fallbacks asking for one commit at a time, as uplink
// serve wires it), a package is cached under the commit that answered.
func TestArtifactsBranchCachedUnderCommit(t *testing.T) {
	s := newArtifactStore(t, map[string]int{"a.apk": 1000})
	c := newArtifacts(t, s, t.TempDir(), 1<<20)
	f := &distribution.Fallbacks{Protocol: c}
	branch := ref.Resolution{Kind: ref.KindBranch, Commit: strings.Repeat("f", 40), Fallback: []string{testCommit}}
	for range 2 {
		pkg, err := f.Package(t.Context(), pkgReq("a.apk"), branch)
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

// cachedFile is the name of file's cached copy in dir, "" when none.
func cachedFile(t *testing.T, dir, file string) string {
	t.Helper()
	hash := artifactHash(acmeHello, testCommit, "x86_64", file)
	for _, name := range cachedFiles(t, dir) {
		if strings.HasPrefix(name, hash+"-") {
			return name
		}
	}
	return ""
}

// A file found at start whose size is right and bytes are not (what a
// crash, a bad disk or a hand can leave) is caught on its first hit, once
// under a herd, and every client gets storage's bytes.
func TestArtifactsCorruptedAfterRestartRefilled(t *testing.T) {
	sizes := map[string]int{"a.apk": 300 << 10, "b.apk": 1000}
	s := newArtifactStore(t, sizes)
	dir := t.TempDir()
	c := newArtifacts(t, s, dir, 1<<20)
	for f := range sizes {
		get(t, c, f)
	}
	waitFilled(t, c, 2)
	path := filepath.Join(dir, cachedFile(t, dir, "a.apk"))
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, len(body) / 2, len(body) - 1} {
		body[i] ^= 0xff
	}
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}

	again := newArtifacts(t, s, dir, 1<<20)
	var wg sync.WaitGroup
	for range 20 {
		for f, size := range sizes {
			wg.Go(func() {
				body, fromFile, err := get(t, again, f)
				if err != nil || !bytes.Equal(body, artifactBody(f, size)) {
					t.Errorf("%s: %d bytes, not storage's, %v", f, len(body), err)
				}
				if f == "b.apk" && !fromFile {
					t.Errorf("the intact file was not served from the cache")
				}
			})
		}
	}
	wg.Wait()
	if n := counter(again.corrupt); n != 1 {
		t.Fatalf("corrupt counted %v times, want 1", n)
	}
	if n := s.opens.Load(); n != 3 {
		t.Fatalf("%d storage reads, want 3 (two fills, one refill)", n)
	}
	waitFilled(t, again, 1)
	body, fromFile, err := get(t, again, "a.apk")
	if err != nil || !fromFile || !bytes.Equal(body, artifactBody("a.apk", 300<<10)) || s.opens.Load() != 3 {
		t.Fatalf("after the refill: %d bytes, from a file %v, %v, %d reads", len(body), fromFile, err, s.opens.Load())
	}
}

// A hit refreshes its file's mtime, so after a restart the file read last
// outlives one filled later but not read since. Last-Modified stays the
// storage's.
func TestArtifactsLRUOrderSurvivesRestart(t *testing.T) {
	s := newArtifactStore(t, map[string]int{"a.apk": 1000, "b.apk": 1000, "c.apk": 1000})
	dir := t.TempDir()
	c := newArtifacts(t, s, dir, 2000)
	backdate := func(file string, by time.Duration) {
		at := time.Now().Add(-by)
		if err := os.Chtimes(filepath.Join(dir, cachedFile(t, dir, file)), at, at); err != nil {
			t.Fatal(err)
		}
	}
	mtime := func(file string) time.Time {
		fi, err := os.Stat(filepath.Join(dir, cachedFile(t, dir, file)))
		if err != nil {
			t.Fatal(err)
		}
		return fi.ModTime()
	}
	for _, f := range []string{"a.apk", "b.apk"} {
		get(t, c, f)
		waitFilled(t, c, 1)
	}
	backdate("a.apk", 2*time.Hour) // filled first, read over a minute ago
	backdate("b.apk", time.Hour)

	again := newArtifacts(t, s, dir, 2000)
	pkg, err := again.Package(t.Context(), pkgReq("a.apk"), atCommit)
	if err != nil || pkg.File() == nil {
		t.Fatalf("a.apk after a restart: %v", err)
	}
	pkg.Close()
	obj, err := s.Getter.Open(t.Context(), artifact.Key(acmeHello, testCommit, "x86_64", "a.apk"))
	if err != nil {
		t.Fatal(err)
	}
	obj.Close()
	if stored := obj.Info().ModTime; !pkg.ModTime.Equal(stored) {
		t.Fatalf("served ModTime %v, stored %v", pkg.ModTime, stored)
	}
	if time.Since(mtime("a.apk")) > time.Minute {
		t.Fatal("a hit did not refresh the file's mtime")
	}
	// Once a minute at most: a second hit leaves the file alone.
	backdate("a.apk", 30*time.Second)
	get(t, again, "a.apk")
	if time.Since(mtime("a.apk")) < 30*time.Second {
		t.Fatal("the mtime refreshed twice within a minute")
	}

	third := newArtifacts(t, s, dir, 2000)
	get(t, third, "c.apk") // evicts the least recently read
	waitFilled(t, third, 1)
	opens := s.opens.Load()
	if _, fromFile, err := get(t, third, "a.apk"); err != nil || !fromFile || s.opens.Load() != opens {
		t.Fatalf("the file read last was evicted (%v)", err)
	}
	if _, fromFile, _ := get(t, third, "b.apk"); fromFile {
		t.Fatal("the file not read since its fill was kept")
	}
}

const (
	fillHelperEnv = "UPLINK_TEST_ARTIFACT_FILL_HELPER"
	killedSize    = 256 << 10
)

// A process killed by SIGKILL mid-fill leaves a temporary; the cache
// started next on the directory removes it and serves storage's bytes.
func TestArtifactsKilledMidFill(t *testing.T) {
	if dirs := os.Getenv(fillHelperEnv); dirs != "" {
		fillAndHang(t, dirs)
		return
	}
	storeDir, dir := t.TempDir(), t.TempDir()
	s := newArtifactStoreIn(t, storeDir, map[string]int{"a.apk": killedSize})
	cmd := exec.Command(os.Args[0], "-test.run=^TestArtifactsKilledMidFill$")
	cmd.Env = append(os.Environ(), fillHelperEnv+"="+storeDir+string(os.PathListSeparator)+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	defer watchdog.Stop()
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "filling\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper said %q (%v), stderr: %s", line, err, stderr.Bytes())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	names := cachedFiles(t, dir)
	if len(names) != 1 || !strings.HasPrefix(names[0], artifactTemp) {
		t.Fatalf("after the kill: %v, want one temporary", names)
	}
	if fi, err := os.Stat(filepath.Join(dir, names[0])); err != nil || fi.Size() != killedSize/2 {
		t.Fatalf("the temporary: %v %v, want %d bytes", fi, err, killedSize/2)
	}
	c := newArtifacts(t, s, dir, 1<<20)
	if names := cachedFiles(t, dir); len(names) != 0 {
		t.Fatalf("left at start: %v", names)
	}
	want := artifactBody("a.apk", killedSize)
	body, fromFile, err := get(t, c, "a.apk")
	if err != nil || fromFile || !bytes.Equal(body, want) || s.opens.Load() != 1 {
		t.Fatalf("%d bytes, from a file %v, %v, %d reads", len(body), fromFile, err, s.opens.Load())
	}
	waitFilled(t, c, 1)
	if body, fromFile, err = get(t, c, "a.apk"); err != nil || !fromFile || !bytes.Equal(body, want) {
		t.Fatalf("refilled: %d bytes, from a file %v, %v", len(body), fromFile, err)
	}
}

// fillAndHang is TestArtifactsKilledMidFill's process to kill: it fills
// the cache from a storage that sends half the package and stalls, says
// "filling" once the temporary holds that half, and waits for its end.
func fillAndHang(t *testing.T, dirs string) {
	storeDir, dir, _ := strings.Cut(dirs, string(os.PathListSeparator))
	s := newArtifactStoreIn(t, storeDir, nil)
	s.stallAfter = killedSize / 2
	c := newArtifacts(t, s, dir, 1<<20)
	pkg, err := c.Package(t.Context(), pkgReq("a.apk"), atCommit)
	if err != nil {
		t.Fatal(err)
	}
	// A client reads only what the fill has written to the temporary.
	if _, err := io.ReadFull(pkg, make([]byte, killedSize/2)); err != nil {
		t.Fatal(err)
	}
	fmt.Println("filling")
	time.Sleep(time.Hour)
}

// A disk without room for a file serves it from storage, caches nothing,
// and leaves no temporary; with room again, the next read fills it.
func TestArtifactsNoRoomServedFromStorage(t *testing.T) {
	s := newArtifactStore(t, map[string]int{"a.apk": 200 << 10})
	dir := t.TempDir()
	c := newArtifacts(t, s, dir, 1<<20)
	preallocate = func(*os.File, int64) error { return syscall.ENOSPC }
	t.Cleanup(func() { preallocate = fallocate })
	body, fromFile, err := get(t, c, "a.apk")
	if err != nil || fromFile || !bytes.Equal(body, artifactBody("a.apk", 200<<10)) {
		t.Fatalf("disk full: %d bytes, from a file %v, %v", len(body), fromFile, err)
	}
	if names := cachedFiles(t, dir); len(names) != 0 || c.lru.Len() != 0 {
		t.Fatalf("left on a full disk: %v", names)
	}
	preallocate = fallocate
	if body, _, err := get(t, c, "a.apk"); err != nil || len(body) != 200<<10 {
		t.Fatalf("with room again: %d bytes, %v", len(body), err)
	}
	waitFilled(t, c, 1)
	if _, fromFile, err := get(t, c, "a.apk"); err != nil || !fromFile {
		t.Fatalf("not cached once there was room: from a file %v, %v", fromFile, err)
	}
}
