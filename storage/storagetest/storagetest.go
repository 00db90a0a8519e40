// Package storagetest is the conformance suite every storage.Driver must
// pass.
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/storage"
)

// Run runs the suite. newDriver must return an empty store, a new one on
// every call.
func Run(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	tests := []struct {
		name string
		fn   func(*testing.T, storage.Driver)
	}{
		{"RoundTrip", testRoundTrip},
		{"EmptyObject", testEmptyObject},
		{"OddKeys", testOddKeys},
		{"OverwriteChangesETag", testOverwrite},
		{"NotFound", testNotFound},
		{"IfAbsent", testIfAbsent},
		{"IfMatch", testIfMatch},
		{"ConcurrentCAS", testConcurrentCAS},
		{"SiblingPutDelete", testSiblingPutDelete},
		{"SeekRead", testSeekRead},
		{"List", testList},
		{"ListHidesInFlightWrites", testListInFlight},
		{"Delete", testDelete},
		{"InvalidKeys", testInvalidKeys},
		{"ShortBody", testShortBody},
		{"Large", testLarge},
		{"ContextCanceled", testContextCanceled},
		{"ContextCanceledMidPut", testContextCanceledMidPut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newDriver(t)) })
	}
}

// clockSkew allows for backends that keep second-precision times.
const clockSkew = 2 * time.Second

func put(t *testing.T, d storage.Driver, key, content string) storage.Info {
	t.Helper()
	info, err := d.Put(t.Context(), key, strings.NewReader(content), int64(len(content)), storage.Condition{})
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return info
}

func read(t *testing.T, d storage.Driver, key string) (string, storage.Info) {
	t.Helper()
	obj, err := d.Open(t.Context(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return string(b), obj.Info()
}

func checkNotFound(t *testing.T, op, key string, err error) {
	t.Helper()
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("%s(%q) = %v, want ErrNotFound", op, key, err)
	}
	var pnf *storage.PathNotFoundError
	if !errors.As(err, &pnf) {
		t.Fatalf("%s(%q) = %T %v, want *PathNotFoundError", op, key, err, err)
	}
	if pnf.Key != key {
		t.Fatalf("%s(%q): PathNotFoundError.Key = %q", op, key, pnf.Key)
	}
}

func checkAbsent(t *testing.T, d storage.Driver, key string) {
	t.Helper()
	_, err := d.Stat(t.Context(), key)
	checkNotFound(t, "Stat", key, err)
}

func testRoundTrip(t *testing.T, d storage.Driver) {
	const key, content = "a/b/c.txt", "hello, uplink\n"
	start := time.Now()
	pi := put(t, d, key, content)
	if pi.Key != key || pi.Size != int64(len(content)) || pi.ETag == "" {
		t.Fatalf("Put info = %+v", pi)
	}
	if pi.ModTime.Before(start.Add(-clockSkew)) || pi.ModTime.After(time.Now().Add(clockSkew)) {
		t.Errorf("Put ModTime %v not near now %v", pi.ModTime, start)
	}

	got, oi := read(t, d, key)
	if got != content {
		t.Fatalf("content = %q, want %q", got, content)
	}
	if oi.Key != key || oi.Size != pi.Size || oi.ETag != pi.ETag {
		t.Fatalf("Open info = %+v, Put info = %+v", oi, pi)
	}
	if oi.ModTime.Before(start.Add(-clockSkew)) || oi.ModTime.After(time.Now().Add(clockSkew)) {
		t.Errorf("Open ModTime %v not near now %v", oi.ModTime, start)
	}

	si, err := d.Stat(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if si.Key != key || si.Size != pi.Size || si.ETag != pi.ETag {
		t.Fatalf("Stat info = %+v, Put info = %+v", si, pi)
	}
}

func testEmptyObject(t *testing.T, d storage.Driver) {
	for _, size := range []int64{0, -1} {
		key := "empty/" + strconv.FormatInt(size, 10)
		pi, err := d.Put(t.Context(), key, strings.NewReader(""), size, storage.Condition{})
		if err != nil {
			t.Fatalf("Put(size %d): %v", size, err)
		}
		if pi.Size != 0 || pi.ETag == "" {
			t.Fatalf("Put info = %+v", pi)
		}
		got, oi := read(t, d, key)
		if got != "" || oi.Size != 0 || oi.ETag != pi.ETag {
			t.Fatalf("read %q, info %+v", got, oi)
		}
	}
}

// testOddKeys uses characters that need escaping in URLs and shells.
func testOddKeys(t *testing.T, d storage.Driver) {
	odd := []string{
		"odd/sp ace", "odd/plus+sign", "odd/q?uery&a=b", "odd/hash#frag", "odd/per%25cent",
		"odd/ünïcødé ✓", "odd/colon:tilde~", "odd/trailing.", "odd/a.b/c..d", "odd/-dash",
	}
	for i, key := range odd {
		put(t, d, key, strconv.Itoa(i))
	}
	for i, key := range odd {
		if got, info := read(t, d, key); got != strconv.Itoa(i) || info.Key != key {
			t.Errorf("read %q = %q (key %q)", key, got, info.Key)
		}
	}
	got, err := d.List(t.Context(), "odd/")
	if err != nil {
		t.Fatal(err)
	}
	if want := slices.Sorted(slices.Values(odd)); !slices.Equal(keys(got), want) {
		t.Errorf("List = %q, want %q", keys(got), want)
	}
	for _, key := range odd {
		if err := d.Delete(t.Context(), key); err != nil {
			t.Fatal(err)
		}
		checkAbsent(t, d, key)
	}
}

func testOverwrite(t *testing.T, d storage.Driver) {
	const key = "over/write"
	v1 := put(t, d, key, "version-1")
	v2 := put(t, d, key, "version-2") // same size: the ETag must not be size-based
	if v1.ETag == v2.ETag {
		t.Fatalf("ETag unchanged by overwrite: %q", v1.ETag)
	}
	v3 := put(t, d, key, "version-3")
	if v3.ETag == v1.ETag || v3.ETag == v2.ETag {
		t.Fatalf("ETag repeated: %q %q %q", v1.ETag, v2.ETag, v3.ETag)
	}
	got, oi := read(t, d, key)
	if got != "version-3" || oi.ETag != v3.ETag {
		t.Fatalf("read %q etag %q, want version-3 etag %q", got, oi.ETag, v3.ETag)
	}
}

func testNotFound(t *testing.T, d storage.Driver) {
	put(t, d, "nf/file", "x")
	put(t, d, "nf/dir/child", "x")
	// Missing, below an object, and a prefix that is not an object.
	for _, key := range []string{"nf/missing", "nf/file/below", "nf/dir", "other/missing"} {
		_, err := d.Open(t.Context(), key)
		checkNotFound(t, "Open", key, err)
		_, err = d.Stat(t.Context(), key)
		checkNotFound(t, "Stat", key, err)
		if !storage.IsNotFound(err) {
			t.Fatalf("IsNotFound(%v) = false", err)
		}
	}
}

func testIfAbsent(t *testing.T, d storage.Driver) {
	const key = "cas/absent"
	ctx := t.Context()
	first, err := d.Put(ctx, key, strings.NewReader("first"), 5, storage.Condition{IfAbsent: true})
	if err != nil {
		t.Fatalf("first IfAbsent put: %v", err)
	}
	_, err = d.Put(ctx, key, strings.NewReader("second"), 6, storage.Condition{IfAbsent: true})
	if !errors.Is(err, storage.ErrConditionFailed) {
		t.Fatalf("second IfAbsent put = %v, want ErrConditionFailed", err)
	}
	// Unknown size takes a different path in some drivers.
	_, err = d.Put(ctx, key, strings.NewReader("third"), -1, storage.Condition{IfAbsent: true})
	if !errors.Is(err, storage.ErrConditionFailed) {
		t.Fatalf("IfAbsent put, size -1 = %v, want ErrConditionFailed", err)
	}
	got, oi := read(t, d, key)
	if got != "first" || oi.ETag != first.ETag {
		t.Fatalf("content %q etag %q, want first %q", got, oi.ETag, first.ETag)
	}
}

func testIfMatch(t *testing.T, d storage.Driver) {
	const key = "cas/match"
	ctx := t.Context()
	v1 := put(t, d, key, "one")
	v2, err := d.Put(ctx, key, strings.NewReader("two"), 3, storage.Condition{IfMatch: v1.ETag})
	if err != nil {
		t.Fatalf("IfMatch current etag: %v", err)
	}
	if v2.ETag == v1.ETag {
		t.Fatalf("ETag unchanged")
	}
	_, err = d.Put(ctx, key, strings.NewReader("three"), 5, storage.Condition{IfMatch: v1.ETag})
	if !errors.Is(err, storage.ErrConditionFailed) {
		t.Fatalf("IfMatch stale etag = %v, want ErrConditionFailed", err)
	}
	_, err = d.Put(ctx, key, strings.NewReader("three"), -1, storage.Condition{IfMatch: v1.ETag})
	if !errors.Is(err, storage.ErrConditionFailed) {
		t.Fatalf("IfMatch stale etag, size -1 = %v, want ErrConditionFailed", err)
	}
	if got, _ := read(t, d, key); got != "two" {
		t.Fatalf("content %q after failed puts, want two", got)
	}
	v3, err := d.Put(ctx, key, strings.NewReader("three"), -1, storage.Condition{IfMatch: v2.ETag})
	if err != nil {
		t.Fatalf("IfMatch current etag, size -1: %v", err)
	}
	if got, oi := read(t, d, key); got != "three" || oi.ETag != v3.ETag {
		t.Fatalf("content %q etag %q, want three %q", got, oi.ETag, v3.ETag)
	}

	_, err = d.Put(ctx, "cas/missing", strings.NewReader("x"), 1, storage.Condition{IfMatch: v3.ETag})
	if !errors.Is(err, storage.ErrConditionFailed) {
		t.Fatalf("IfMatch on missing key = %v, want ErrConditionFailed", err)
	}
	checkAbsent(t, d, "cas/missing")
}

// testConcurrentCAS increments a counter object from many goroutines; a
// lost update shows up as a final value below the number of increments.
func testConcurrentCAS(t *testing.T, d storage.Driver) {
	const (
		key     = "cas/counter"
		workers = 16
		each    = 5
	)
	ctx := t.Context()
	if _, err := d.Put(ctx, key, strings.NewReader("0"), 1, storage.Condition{IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range each {
				if err := increment(ctx, d, key); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got, _ := read(t, d, key); got != strconv.Itoa(workers*each) {
		t.Fatalf("counter = %s, want %d (lost updates)", got, workers*each)
	}
}

func increment(ctx context.Context, d storage.Driver, key string) error {
	for attempt := 0; attempt < 1000; attempt++ {
		n, etag, err := readCounter(ctx, d, key)
		if errors.Is(err, storage.ErrConditionFailed) {
			continue // replaced while we read it
		}
		if err != nil {
			return err
		}
		next := strconv.Itoa(n + 1)
		_, err = d.Put(ctx, key, strings.NewReader(next), int64(len(next)), storage.Condition{IfMatch: etag})
		if errors.Is(err, storage.ErrConditionFailed) {
			continue
		}
		return err
	}
	return fmt.Errorf("increment: too many conflicts")
}

func readCounter(ctx context.Context, d storage.Driver, key string) (int, string, error) {
	obj, err := d.Open(ctx, key)
	if err != nil {
		return 0, "", err
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		return 0, "", err
	}
	n, err := strconv.Atoi(string(b))
	return n, obj.Info().ETag, err
}

func testSeekRead(t *testing.T, d storage.Driver) {
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	const key = "seek/obj"
	if _, err := d.Put(t.Context(), key, bytes.NewReader(data), int64(len(data)), storage.Condition{}); err != nil {
		t.Fatal(err)
	}
	obj, err := d.Open(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()

	seek := func(off int64, whence int, want int64) {
		t.Helper()
		got, err := obj.Seek(off, whence)
		if err != nil || got != want {
			t.Fatalf("Seek(%d, %d) = %d, %v; want %d", off, whence, got, err, want)
		}
	}
	readN := func(n int, want []byte) {
		t.Helper()
		buf := make([]byte, n)
		if _, err := io.ReadFull(obj, buf); err != nil {
			t.Fatalf("read %d: %v", n, err)
		}
		if !bytes.Equal(buf, want) {
			t.Fatalf("read %d bytes: wrong content", n)
		}
	}

	// Seek before any read, as http.ServeContent does.
	seek(0, io.SeekEnd, 1000)
	seek(100, io.SeekStart, 100)
	readN(50, data[100:150])
	seek(0, io.SeekCurrent, 150)
	seek(-10, io.SeekEnd, 990)
	rest, err := io.ReadAll(obj)
	if err != nil || !bytes.Equal(rest, data[990:]) {
		t.Fatalf("tail = %d bytes, %v", len(rest), err)
	}
	seek(-100, io.SeekCurrent, 900)
	readN(10, data[900:910])
	seek(0, io.SeekStart, 0)
	all, err := io.ReadAll(obj)
	if err != nil || !bytes.Equal(all, data) {
		t.Fatalf("re-read from 0: %d bytes, %v", len(all), err)
	}
	seek(1000, io.SeekStart, 1000)
	if n, err := obj.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("Read at end = %d, %v; want 0, EOF", n, err)
	}
	if _, err := obj.Seek(-1, io.SeekStart); err == nil {
		t.Fatal("Seek to a negative offset succeeded")
	}
	seek(500, io.SeekStart, 500)
	readN(1, data[500:501])
}

func keys(infos []storage.Info) []string {
	out := make([]string, len(infos))
	for i, in := range infos {
		out[i] = in.Key
	}
	return out
}

func testList(t *testing.T, d storage.Driver) {
	all := []string{
		"l/a/1", "l/a/2", "l/ab", "l/abc/x", "l/b/c/d", "l.txt", "meta/builds/org/app/abc123/x",
		"meta/builds/org/app/abc124", "meta/builds/org/app/abd", "m", "z/z",
	}
	ctx := t.Context()
	for i, k := range slices.Backward(all) { // write out of order
		put(t, d, k, strings.Repeat("x", i+1))
	}
	sorted := slices.Sorted(slices.Values(all))

	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", sorted},
		{"l/", []string{"l/a/1", "l/a/2", "l/ab", "l/abc/x", "l/b/c/d"}},
		{"l", []string{"l.txt", "l/a/1", "l/a/2", "l/ab", "l/abc/x", "l/b/c/d"}},
		{"l/a/", []string{"l/a/1", "l/a/2"}},
		{"l/a", []string{"l/a/1", "l/a/2", "l/ab", "l/abc/x"}},
		{"l/ab", []string{"l/ab", "l/abc/x"}},
		{"l/abc", []string{"l/abc/x"}},
		{"l/b/c/d", []string{"l/b/c/d"}},
		{"meta/builds/org/app/abc12", []string{"meta/builds/org/app/abc123/x", "meta/builds/org/app/abc124"}},
		{"meta/builds/org/app/", []string{"meta/builds/org/app/abc123/x", "meta/builds/org/app/abc124", "meta/builds/org/app/abd"}},
		{"m", []string{"m", "meta/builds/org/app/abc123/x", "meta/builds/org/app/abc124", "meta/builds/org/app/abd"}},
		{"nope/", nil},
		{"nope/deeper/", nil},
		{"l/zz", nil},
		{"m/", nil}, // "m" is an object, not a directory
		{"z/z/", nil},
	} {
		got, err := d.List(ctx, tc.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", tc.prefix, err)
		}
		if !slices.Equal(keys(got), tc.want) {
			t.Errorf("List(%q) = %q, want %q", tc.prefix, keys(got), tc.want)
		}
	}

	// Listed infos agree with Stat.
	got, err := d.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, li := range got {
		si, err := d.Stat(ctx, li.Key)
		if err != nil {
			t.Fatal(err)
		}
		if li.Size != si.Size || li.ETag != si.ETag {
			t.Errorf("List info %+v, Stat info %+v", li, si)
		}
	}
}

// testListInFlight lists while a Put is still streaming and after one
// failed: neither may show a partial object or a temp file.
func testListInFlight(t *testing.T, d storage.Driver) {
	ctx := t.Context()
	put(t, d, "f/done", "x")
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := d.Put(ctx, "f/pending", pr, -1, storage.Condition{})
		done <- err
	}()
	if _, err := pw.Write(bytes.Repeat([]byte("y"), 64<<10)); err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"", "f/"} {
		got, err := d.List(ctx, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(keys(got), []string{"f/done"}) {
			t.Fatalf("List(%q) during a put = %q", prefix, keys(got))
		}
	}
	checkAbsent(t, d, "f/pending")
	pw.CloseWithError(errors.New("client went away"))
	if err := <-done; err == nil {
		t.Fatal("Put with a failing reader succeeded")
	}
	got, err := d.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys(got), []string{"f/done"}) {
		t.Fatalf("List after a failed put = %q", keys(got))
	}
	checkAbsent(t, d, "f/pending")
}

func testDelete(t *testing.T, d storage.Driver) {
	ctx := t.Context()
	put(t, d, "d/e/f", "1")
	put(t, d, "d/e/g", "2")
	put(t, d, "d/h", "3")
	if err := d.Delete(ctx, "d/e/f"); err != nil {
		t.Fatal(err)
	}
	checkAbsent(t, d, "d/e/f")
	if got, _ := read(t, d, "d/e/g"); got != "2" {
		t.Fatalf("sibling = %q", got)
	}
	if err := d.Delete(ctx, "d/e/f"); err != nil {
		t.Fatalf("Delete of a deleted key: %v", err)
	}
	for _, key := range []string{"never/was", "d/e", "d/h/below"} {
		if err := d.Delete(ctx, key); err != nil {
			t.Fatalf("Delete(%q) of a missing key: %v", key, err)
		}
	}
	// Deleting the last object of a directory, then writing there again.
	if err := d.Delete(ctx, "d/e/g"); err != nil {
		t.Fatal(err)
	}
	got, err := d.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys(got), []string{"d/h"}) {
		t.Fatalf("List after deletes = %q", keys(got))
	}
	put(t, d, "d/e/g", "again")
	if got, _ := read(t, d, "d/e/g"); got != "again" {
		t.Fatalf("rewritten = %q", got)
	}
	// A deleted key can be created again with IfAbsent.
	if err := d.Delete(ctx, "d/h"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Put(ctx, "d/h", strings.NewReader("4"), 1, storage.Condition{IfAbsent: true}); err != nil {
		t.Fatalf("IfAbsent after delete: %v", err)
	}
}

func testInvalidKeys(t *testing.T, d storage.Driver) {
	ctx := t.Context()
	invalid := []string{
		"", "/abs", "a/../b", "..", "../x", "a//b", "a/./b", ".", ".hidden", "a/.hidden", ".tmp/x",
		".locks/x", "a\\b", "a\x00b", "a\nb", "a\xffb", "trailing/", strings.Repeat("k", storage.MaxKeyLength+1),
	}
	for _, key := range invalid {
		check := func(op string, err error) {
			t.Helper()
			if !errors.Is(err, storage.ErrInvalidKey) {
				t.Errorf("%s(%q) = %v, want ErrInvalidKey", op, key, err)
			}
		}
		_, err := d.Open(ctx, key)
		check("Open", err)
		_, err = d.Stat(ctx, key)
		check("Stat", err)
		_, err = d.Put(ctx, key, strings.NewReader("x"), 1, storage.Condition{})
		check("Put", err)
		_, err = d.Put(ctx, key, strings.NewReader("x"), -1, storage.Condition{IfAbsent: true})
		check("Put IfAbsent", err)
		_, err = d.Put(ctx, key, strings.NewReader("x"), 1, storage.Condition{IfMatch: "etag"})
		check("Put IfMatch", err)
		check("Delete", d.Delete(ctx, key))
	}
	for _, prefix := range []string{"/", "/abs", "../", "a//", "a/../", ".hidden", ".tmp/", "a\\", "a/./"} {
		if _, err := d.List(ctx, prefix); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("List(%q) = %v, want ErrInvalidKey", prefix, err)
		}
	}
	got, err := d.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("invalid keys created objects: %q", keys(got))
	}
	put(t, d, "ok", "x") // the store still works
}

func testShortBody(t *testing.T, d storage.Driver) {
	_, err := d.Put(t.Context(), "short", onlyReader{strings.NewReader("12345")}, 10, storage.Condition{})
	if err == nil {
		t.Fatal("Put with a body shorter than size succeeded")
	}
	checkAbsent(t, d, "short")
}

func testLarge(t *testing.T, d storage.Driver) {
	const size = 8 << 20
	data := make([]byte, size)
	rnd := rand.NewChaCha8([32]byte{1})
	rnd.Read(data)
	want := sha256.Sum256(data)
	ctx := t.Context()

	for _, tc := range []struct {
		key  string
		size int64
		cond storage.Condition
	}{
		{"large/known", size, storage.Condition{}},
		{"large/unknown", -1, storage.Condition{}},
		{"large/unknown-cas", -1, storage.Condition{IfAbsent: true}},
	} {
		// onlyReader hides bytes.Reader's extra methods: a plain stream.
		info, err := d.Put(ctx, tc.key, onlyReader{bytes.NewReader(data)}, tc.size, tc.cond)
		if err != nil {
			t.Fatalf("Put(%s): %v", tc.key, err)
		}
		if info.Size != size {
			t.Fatalf("Put(%s) size = %d", tc.key, info.Size)
		}
		obj, err := d.Open(ctx, tc.key)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, obj)
		if err != nil || n != size || !bytes.Equal(h.Sum(nil), want[:]) || obj.Info().Size != size {
			obj.Close()
			t.Fatalf("%s: read %d bytes, %v, hash match %v", tc.key, n, err, bytes.Equal(h.Sum(nil), want[:]))
		}
		// A range in the middle.
		const off = size/2 + 12345
		if _, err := obj.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		if _, err := io.ReadFull(obj, buf); err != nil || !bytes.Equal(buf, data[off:off+4096]) {
			t.Fatalf("%s: range read: %v", tc.key, err)
		}
		obj.Close()
	}
}

type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func testContextCanceled(t *testing.T, d storage.Driver) {
	put(t, d, "ctx/exists", "x")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context = %v, want context.Canceled", op, err)
		}
	}
	_, err := d.Open(ctx, "ctx/exists")
	check("Open", err)
	_, err = d.Stat(ctx, "ctx/exists")
	check("Stat", err)
	_, err = d.List(ctx, "")
	check("List", err)
	_, err = d.Put(ctx, "ctx/new", strings.NewReader("x"), 1, storage.Condition{})
	check("Put", err)
	_, err = d.Put(ctx, "ctx/new", strings.NewReader("x"), -1, storage.Condition{IfAbsent: true})
	check("Put IfAbsent", err)
	check("Delete", d.Delete(ctx, "ctx/exists"))

	checkAbsent(t, d, "ctx/new")
	if got, _ := read(t, d, "ctx/exists"); got != "x" {
		t.Fatalf("object changed by canceled calls: %q", got)
	}
}

// slowReader produces bytes forever, slowly.
type slowReader struct{}

func (slowReader) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	n := min(len(p), 1024)
	clear(p[:n])
	return n, nil
}

func testContextCanceledMidPut(t *testing.T, d storage.Driver) {
	for _, size := range []int64{-1, 1 << 30} {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		start := time.Now()
		_, err := d.Put(ctx, "ctx/slow", slowReader{}, size, storage.Condition{})
		cancel()
		if err == nil {
			t.Fatalf("Put(size %d) of an endless body succeeded", size)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Logf("Put(size %d) error is not DeadlineExceeded: %v", size, err)
		}
		if el := time.Since(start); el > 10*time.Second {
			t.Fatalf("Put(size %d) took %v after its deadline", size, el)
		}
		checkAbsent(t, d, "ctx/slow")
	}
}

// testSiblingPutDelete writes and deletes keys under sibling prefixes at
// once, as concurrent publishes of different apps do with their intents:
// a delete that prunes an emptied parent must not fail a put beside it.
func testSiblingPutDelete(t *testing.T, d storage.Driver) {
	const writers, rounds = 8, 30
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range rounds {
				key := fmt.Sprintf("race/parent/w%d/k%d", w, n)
				if _, err := d.Put(t.Context(), key, strings.NewReader("x"), 1, storage.Condition{IfAbsent: n%2 == 0}); err != nil {
					errs <- fmt.Errorf("put %s: %w", key, err)
					return
				}
				if err := d.Delete(t.Context(), key); err != nil {
					errs <- fmt.Errorf("delete %s: %w", key, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if infos, err := d.List(t.Context(), "race/"); err != nil || len(infos) != 0 {
		t.Errorf("List(race/) after every key was deleted = %d keys, %v; want none", len(infos), err)
	}
}
