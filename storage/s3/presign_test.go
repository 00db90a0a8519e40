package s3

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/testenv"
	"github.com/uplinkhq/uplink/storage"
)

// TestPresignGet: the presigned URL of a key (under the driver's prefix)
// gets its bytes from versitygw without credentials and names its expiry;
// a tampered signature is refused; invalid keys are refused before
// signing.
func TestPresignGet(t *testing.T) {
	s := testenv.StartS3(t)
	cfg := config(s, s.NewBucket(t))
	cfg.Prefix = "store"
	d := newDriver(t, cfg)
	body := []byte("package bytes")
	if _, err := d.Put(t.Context(), "deployments/a/b.apk", bytes.NewReader(body), int64(len(body)), storage.Condition{}); err != nil {
		t.Fatal(err)
	}
	u, err := d.PresignGet(t.Context(), "deployments/a/b.apk", 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if u.Host != s.Endpoint || !strings.HasSuffix(u.Path, "/store/deployments/a/b.apk") || u.Query().Get("X-Amz-Expires") != "120" {
		t.Fatalf("presigned URL %s", u)
	}
	fetch := func(url string) (int, []byte) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, got := fetch(u.String()); code != http.StatusOK || !bytes.Equal(got, body) {
		t.Fatalf("GET presigned: %d %q", code, got)
	}
	q := u.Query()
	q.Set("X-Amz-Signature", strings.Repeat("0", 64))
	bad := *u
	bad.RawQuery = q.Encode()
	if code, _ := fetch(bad.String()); code != http.StatusForbidden {
		t.Errorf("GET with a wrong signature: %d, want 403", code)
	}
	if _, err := d.PresignGet(t.Context(), "../escape", time.Minute); !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("invalid key: %v", err)
	}
}
