package s3

import (
	"bytes"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/uplinkhq/uplink/internal/testenv"
)

// TestAbortIncompleteUploads: multipart uploads started and never finished
// under the swept prefixes are aborted once older than the bound; younger
// ones, ones elsewhere in the bucket and ones of another store's prefix
// stay.
func TestAbortIncompleteUploads(t *testing.T) {
	s := testenv.StartS3(t)
	cfg := config(s, s.NewBucket(t))
	cfg.Prefix = "store"
	d := newDriver(t, cfg)
	ctx := t.Context()
	start := func(key string) {
		id, err := d.core.NewMultipartUpload(ctx, d.bucket, key, minio.PutObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		part := bytes.Repeat([]byte("x"), 5<<20)
		if _, err := d.core.PutObjectPart(ctx, d.bucket, key, id, 1, bytes.NewReader(part), int64(len(part)), minio.PutObjectPartOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	incomplete := func() map[string]bool {
		keys := map[string]bool{}
		for u := range d.client.ListIncompleteUploads(ctx, d.bucket, "", true) {
			if u.Err != nil {
				t.Fatal(u.Err)
			}
			keys[u.Key] = true
		}
		return keys
	}
	for _, k := range []string{"store/deployments/acme/hello/c/x86_64/big.apk", "store/meta/big", "other/deployments/x", "store/elsewhere/y"} {
		start(k)
	}
	if n, err := d.AbortIncompleteUploads(ctx, time.Hour, "deployments/", "meta/"); n != 0 || err != nil {
		t.Fatalf("with a bound of 1h: aborted %d, %v", n, err)
	}
	if got := incomplete(); len(got) != 4 {
		t.Fatalf("incomplete uploads after a sweep that should abort none: %v", got)
	}
	time.Sleep(1100 * time.Millisecond) // S3 dates have one-second resolution
	n, err := d.AbortIncompleteUploads(ctx, time.Second, "deployments/", "meta/")
	if n != 2 || err != nil {
		t.Fatalf("aborted %d, %v; want the 2 under the store's deployments/ and meta/", n, err)
	}
	if got := incomplete(); len(got) != 2 || !got["other/deployments/x"] || !got["store/elsewhere/y"] {
		t.Fatalf("incomplete uploads left: %v", got)
	}
}
