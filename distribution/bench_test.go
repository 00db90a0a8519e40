package distribution_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/cache"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/filesystem"
)

// discard is a ResponseWriter that costs nothing, so the benchmark
// measures the handler.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

func setup(b testing.TB, indexSize int, auth ...distribution.Authorizer) (*echo.Echo, string) {
	return setupIndexFiles(b, indexSize, "", auth...)
}

// setupIndexFiles is setup with the index cache keeping files in dir.
func setupIndexFiles(b testing.TB, indexSize int, dir string, auth ...distribution.Authorizer) (*echo.Echo, string) {
	d, err := filesystem.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	app := artifact.App{Org: "acme", Name: "hello"}
	commit := "0123456789abcdef0123456789abcdef01234567"
	index := bytes.Repeat([]byte{0x5a}, indexSize)
	if _, err := d.Put(context.Background(), artifact.Key(app, commit, "x86_64", artifact.IndexFile), bytes.NewReader(index), int64(len(index)), storage.Condition{}); err != nil {
		b.Fatal(err)
	}
	store := ref.NewStore(d)
	if _, err := store.Publish(context.Background(), app, ref.PublishRequest{Commit: commit, Branch: "main"}); err != nil {
		b.Fatal(err)
	}
	e := echo.New()
	var p distribution.Protocol = &distribution.Fallbacks{
		Protocol: &distribution.Repositories{Storage: d, Refs: cache.NewRefs(store, cache.RefsConfig{})},
		Clients:  distribution.NewClientIndexes(distribution.ClientIndexConfig{}), // as `uplink serve` runs
	}
	var authorizer distribution.Authorizer
	if len(auth) > 0 {
		authorizer = auth[0]
	}
	p = distribution.NewAccess(cache.NewIndexes(p, 64<<20, dir, nil), nil, authorizer)
	distribution.New(distribution.Config{Protocol: p}).Register(e)
	return e, "/distribution/main/acme/hello/x86_64/APKINDEX.tar.gz"
}

// BenchmarkIndexCached is the hot path: an index through a branch ref,
// pointer and bytes already in memory.
func BenchmarkIndexCached(b *testing.B) {
	e, path := setup(b, 1<<20)
	req := httptest.NewRequest(http.MethodGet, path, nil)
	w := &discard{h: http.Header{}}
	e.ServeHTTP(w, req) // warm the caches
	b.ReportAllocs()
	b.SetBytes(1 << 20)
	for b.Loop() {
		clear(w.h)
		e.ServeHTTP(w, req)
	}
}

// BenchmarkIndexNotModified is apk's periodic refresh answered 304.
func BenchmarkIndexNotModified(b *testing.B) {
	e, path := setup(b, 1<<20)
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.Header.Set("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")
	w := &discard{h: http.Header{}}
	e.ServeHTTP(w, req)
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		e.ServeHTTP(w, req)
	}
}

// BenchmarkBaselineStatic is the floor the hot path is compared with in
// the same run: a bare net/http handler writing the same bytes from memory
// with the same headers, without routing, path parsing or lookups.
func BenchmarkBaselineStatic(b *testing.B) {
	data := bytes.Repeat([]byte{0x5a}, 1<<20)
	length, typ, lm := []string{"1048576"}, []string{"application/gzip"}, []string{time.Now().UTC().Format(http.TimeFormat)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr["Content-Length"], hdr["Content-Type"], hdr["Last-Modified"] = length, typ, lm
		w.WriteHeader(http.StatusOK)
		w.Write(data)
	})
	req := httptest.NewRequest(http.MethodGet, "/x86_64/APKINDEX.tar.gz", nil)
	w := &discard{h: http.Header{}}
	b.ReportAllocs()
	b.SetBytes(1 << 20)
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}
