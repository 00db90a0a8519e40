package s3

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/uplinkhq/uplink/internal/testenv"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/storagetest"
)

func config(s *testenv.S3, bucket string) Config {
	return Config{
		Endpoint:  s.Endpoint,
		Bucket:    bucket,
		Region:    s.Region,
		AccessKey: s.AccessKey,
		SecretKey: s.SecretKey,
		PathStyle: true,
	}
}

func newDriver(t *testing.T, cfg Config) *Driver {
	t.Helper()
	d, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestConformance(t *testing.T) {
	s := testenv.StartS3(t)
	storagetest.Run(t, func(t *testing.T) storage.Driver {
		return newDriver(t, config(s, s.NewBucket(t)))
	})
}

// TestConformancePrefix runs the suite on stores sharing one bucket under
// different prefixes.
func TestConformancePrefix(t *testing.T) {
	s := testenv.StartS3(t)
	bucket := s.NewBucket(t)
	n := 0
	storagetest.Run(t, func(t *testing.T) storage.Driver {
		n++
		cfg := config(s, bucket)
		cfg.Prefix = "/store" + strconv.Itoa(n) + "/"
		return newDriver(t, cfg)
	})
}

// TestServerConditionalPut shows, with minio-go alone, that the S3 server
// honours If-None-Match: * and If-Match on PutObject: the driver's
// compare-and-swap relies on it.
func TestServerConditionalPut(t *testing.T) {
	s := testenv.StartS3(t)
	d := newDriver(t, config(s, s.NewBucket(t)))
	c, ctx := d.client, t.Context()
	put := func(body string, set func(*minio.PutObjectOptions)) (minio.UploadInfo, minio.ErrorResponse) {
		t.Helper()
		var opts minio.PutObjectOptions
		set(&opts)
		ui, err := c.PutObject(ctx, d.bucket, "k", strings.NewReader(body), int64(len(body)), opts)
		return ui, minio.ToErrorResponse(err)
	}
	ifNone := func(o *minio.PutObjectOptions) { o.SetMatchETagExcept("*") }

	first, resp := put("one", ifNone)
	if resp.Code != "" {
		t.Fatalf("If-None-Match: * on a new key: %+v", resp)
	}
	if _, resp = put("two", ifNone); resp.StatusCode != http.StatusPreconditionFailed {
		t.Fatalf("If-None-Match: * on an existing key: %+v, want 412", resp)
	}
	if _, resp = put("two", func(o *minio.PutObjectOptions) { o.SetMatchETag("0123456789abcdef0123456789abcdef") }); resp.StatusCode != http.StatusPreconditionFailed {
		t.Fatalf("If-Match with a wrong etag: %+v, want 412", resp)
	}
	second, resp := put("two", func(o *minio.PutObjectOptions) { o.SetMatchETag(first.ETag) })
	if resp.Code != "" {
		t.Fatalf("If-Match with the current etag: %+v", resp)
	}
	if _, resp = put("three", func(o *minio.PutObjectOptions) { o.SetMatchETag(first.ETag) }); resp.StatusCode != http.StatusPreconditionFailed {
		t.Fatalf("If-Match with a stale etag: %+v, want 412", resp)
	}
	if err := d.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if _, resp = put("four", func(o *minio.PutObjectOptions) { o.SetMatchETag(second.ETag) }); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("If-Match on a missing key: %+v, want 404", resp)
	}
	t.Logf("versitygw: If-None-Match/If-Match on PutObject honoured (412, and 404 for If-Match on a missing key)")
}

// TestMultipart forces the multipart paths with a small part size: an
// unconditional put of unknown size goes multipart; a conditional one is
// spooled and sent as one PUT, because minio-go would drop the condition
// from CompleteMultipartUpload.
func TestMultipart(t *testing.T) {
	s := testenv.StartS3(t)
	d := newDriver(t, config(s, s.NewBucket(t)))
	d.partSize = 5 << 20 // S3's minimum
	ctx := t.Context()
	gen := func(seed byte) []byte {
		b := make([]byte, 12<<20)
		rand.NewChaCha8([32]byte{seed}).Read(b)
		return b
	}
	v1, v2 := gen(1), gen(2)
	stream := func(b []byte) io.Reader { return io.MultiReader(bytes.NewReader(b)) } // no ReaderAt

	check := func(key string, data []byte) storage.Info {
		t.Helper()
		want := sha256.Sum256(data)
		obj, err := d.Open(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		defer obj.Close()
		h := sha256.New()
		if n, err := io.Copy(h, obj); err != nil || n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatalf("%s: read %d, %v, or wrong content", key, n, err)
		}
		return obj.Info()
	}

	first, err := d.Put(ctx, "multi", stream(v1), -1, storage.Condition{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(first.ETag, "-") {
		t.Errorf("ETag %q: expected a multipart upload", first.ETag)
	}
	if info := check("multi", v1); info.ETag != first.ETag {
		t.Fatalf("Stat ETag %q, Put ETag %q", info.ETag, first.ETag)
	}
	second, err := d.Put(ctx, "multi", stream(v2), int64(len(v2)), storage.Condition{})
	if err != nil {
		t.Fatal(err)
	}
	check("multi", v2)

	// Conditional, large, unknown size: spooled, still conditional.
	if _, err := d.Put(ctx, "multi", stream(v1), -1, storage.Condition{IfAbsent: true}); !errors.Is(err, storage.ErrConditionFailed) {
		t.Fatalf("IfAbsent on an existing key, large: %v", err)
	}
	if _, err := d.Put(ctx, "multi", stream(v1), -1, storage.Condition{IfMatch: first.ETag}); !errors.Is(err, storage.ErrConditionFailed) {
		t.Fatalf("IfMatch stale, large: %v", err)
	}
	check("multi", v2)
	cas, err := d.Put(ctx, "multi", stream(v1), -1, storage.Condition{IfMatch: second.ETag})
	if err != nil {
		t.Fatalf("IfMatch current multipart etag, large: %v", err)
	}
	if info := check("multi", v1); info.ETag != cas.ETag {
		t.Fatalf("Stat ETag %q, Put ETag %q", info.ETag, cas.ETag)
	}
	// Conditional, large, known size: one PUT.
	if _, err := d.Put(ctx, "multi2", stream(v2), int64(len(v2)), storage.Condition{IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	check("multi2", v2)
}

// TestReadAfterOverwrite: an Object opened before an overwrite must not
// mix versions.
func TestReadAfterOverwrite(t *testing.T) {
	s := testenv.StartS3(t)
	d := newDriver(t, config(s, s.NewBucket(t)))
	ctx := t.Context()
	if _, err := d.Put(ctx, "k", strings.NewReader("old-old"), 7, storage.Condition{}); err != nil {
		t.Fatal(err)
	}
	obj, err := d.Open(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	if _, err := d.Put(ctx, "k", strings.NewReader("new-new"), 7, storage.Condition{}); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(obj)
	if !errors.Is(err, storage.ErrConditionFailed) {
		t.Fatalf("read after overwrite = %q, %v; want ErrConditionFailed", b, err)
	}
}

// TestErrorsAreNotNotFound: a missing bucket or bad credentials must not
// look like a missing key.
func TestErrorsAreNotNotFound(t *testing.T) {
	s := testenv.StartS3(t)
	ctx := t.Context()
	missing := config(s, "no-such-bucket-here")
	badAuth := config(s, s.NewBucket(t))
	badAuth.SecretKey = "wrong"
	for name, cfg := range map[string]Config{"missing bucket": missing, "bad credentials": badAuth} {
		d := newDriver(t, cfg)
		_, err := d.Stat(ctx, "k")
		if err == nil || storage.IsNotFound(err) {
			t.Errorf("%s: Stat = %v, want a non-not-found error", name, err)
		}
		_, err = d.Open(ctx, "k")
		if err == nil || storage.IsNotFound(err) {
			t.Errorf("%s: Open = %v, want a non-not-found error", name, err)
		}
		if _, err = d.List(ctx, ""); err == nil {
			t.Errorf("%s: List succeeded", name)
		}
		if err = d.Delete(ctx, "k"); err == nil {
			t.Errorf("%s: Delete succeeded", name)
		}
		_, err = d.Put(ctx, "k", strings.NewReader("x"), 1, storage.Condition{IfMatch: "abc"})
		if err == nil || errors.Is(err, storage.ErrConditionFailed) || storage.IsNotFound(err) {
			t.Errorf("%s: Put IfMatch = %v, want a plain error", name, err)
		}
	}
}

func TestEnsureBucket(t *testing.T) {
	s := testenv.StartS3(t)
	d := newDriver(t, config(s, "uplink-ensure"))
	for range 2 { // idempotent
		if err := d.EnsureBucket(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Put(t.Context(), "k", strings.NewReader("x"), 1, storage.Condition{}); err != nil {
		t.Fatal(err)
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{Bucket: "b"},
		{Endpoint: "127.0.0.1:1"},
		{Endpoint: "127.0.0.1:1", Bucket: "b", Prefix: "a/../b"},
	} {
		if _, err := New(t.Context(), cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}
