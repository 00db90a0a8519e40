package server_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/server"
)

// TestDistributionRanges: --max-ranges on both drivers (sendfile from
// disk, lazy reads from S3): ranges past it after merging get the whole
// file, overlapping ones are merged, a few distinct ones are a multipart
// response.
func TestDistributionRanges(t *testing.T) {
	drivers(t, func(t *testing.T, cfg server.Config) {
		cfg.MaxRanges = 2
		n := start(t, cfg)
		files := hello(t, apktest.NewKey(t), "1.0-r0", "A")
		n.publish(t, commitOf("A"), "main", files)
		pkg := files["x86_64/hello-1.0-r0.apk"]
		url := n.repo("main") + "/x86_64/hello-1.0-r0.apk"

		many := make([]string, 5000)
		for i := range many {
			many[i] = fmt.Sprintf("%d-%d", 2*i, 2*i)
		}
		for _, c := range []struct {
			rng, contentType, contentRange string
			status                         int
		}{
			{"bytes=" + strings.Join(many, ","), "application/octet-stream", "", http.StatusOK},
			{"bytes=0-0,10-10,20-20", "application/octet-stream", "", http.StatusOK},
			{"bytes=0-9,5-19,20-29", "application/octet-stream", fmt.Sprintf("bytes 0-29/%d", len(pkg)), http.StatusPartialContent},
			{"bytes=0-0,10-10", "multipart/byteranges", "", http.StatusPartialContent},
		} {
			resp, body := get(t, url, "Range", c.rng)
			if resp.StatusCode != c.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.contentType) ||
				resp.Header.Get("Content-Range") != c.contentRange {
				t.Errorf("Range %.40q: %d %q %q", c.rng, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Range"))
			}
			switch {
			case c.status == http.StatusOK && !bytes.Equal(body, pkg):
				t.Errorf("Range %.40q: a 200 without the whole file", c.rng)
			case c.contentRange != "" && !bytes.Equal(body, pkg[:30]):
				t.Errorf("Range %.40q: not bytes 0-29", c.rng)
			}
		}
	})
}

// TestDistributionRequestID: every distribution response carries an
// X-Request-Id, the client's own when it sent one, even without the access
// log: a failure after the headers is logged under it.
func TestDistributionRequestID(t *testing.T) {
	cfg := baseConfig(t)
	cfg.AccessLog = false
	n := start(t, cfg)
	resp, _ := get(t, n.repo("main")+"/x86_64/APKINDEX.tar.gz")
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("%d, X-Request-Id %q", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}
	resp, _ = get(t, n.repo("main")+"/x86_64/APKINDEX.tar.gz", "X-Request-Id", "trace-42")
	if got := resp.Header.Get("X-Request-Id"); got != "trace-42" {
		t.Errorf("X-Request-Id %q, want the client's trace-42", got)
	}
}
