package server_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/server"
	"github.com/uplinkhq/uplink/internal/testenv"
	"github.com/uplinkhq/uplink/storage/s3"
)

// TestDistributionHeaders checks each row and header of API.md's
// Distribution table, on each driver.
func TestDistributionHeaders(t *testing.T) {
	drivers(t, func(t *testing.T, cfg server.Config) {
		n := start(t, cfg)
		key := apktest.NewKey(t)
		a := commitOf("A")
		files := hello(t, key, "1.0-r0", "A")
		n.publish(t, a, "main", files, "v1")
		index := files["x86_64/APKINDEX.tar.gz"]
		pkg := files["x86_64/hello-1.0-r0.apk"]
		refs, err := n.api.Refs(t.Context(), testApp)
		if err != nil {
			t.Fatal(err)
		}
		moved := refs.Branches["main"].UpdatedAt
		// A move time is rounded up to the next second, and Last-Modified
		// is kept at or before Date until the clock gets there
		// (TestLastModifiedNotAfterDate): check the settled headers.
		time.Sleep(time.Until(moved))

		for _, tc := range []struct {
			ref, cacheControl string
		}{
			{"main", "no-cache"},
			{"v1", "no-cache"},
			{a, "public, max-age=31536000, immutable"},
		} {
			resp, body := get(t, n.repo(tc.ref)+"/x86_64/APKINDEX.tar.gz", "Accept-Encoding", "gzip")
			h := resp.Header
			switch {
			case resp.StatusCode != http.StatusOK:
				t.Fatalf("%s: status %d", tc.ref, resp.StatusCode)
			case !bytes.Equal(body, index):
				t.Fatalf("%s: index bytes differ", tc.ref)
			case resp.ContentLength != int64(len(index)) || h.Get("Content-Length") != fmt.Sprint(len(index)):
				t.Fatalf("%s: Content-Length %q, want %d", tc.ref, h.Get("Content-Length"), len(index))
			case h.Get("Content-Encoding") != "" || resp.Uncompressed:
				t.Fatalf("%s: Content-Encoding %q", tc.ref, h.Get("Content-Encoding"))
			case h.Get("Cache-Control") != tc.cacheControl:
				t.Fatalf("%s: Cache-Control %q, want %q", tc.ref, h.Get("Cache-Control"), tc.cacheControl)
			case h.Get("X-Uplink-Commit") != a:
				t.Fatalf("%s: X-Uplink-Commit %q", tc.ref, h.Get("X-Uplink-Commit"))
			case !strings.HasPrefix(h.Get("ETag"), `"`):
				t.Fatalf("%s: ETag %q is not strong", tc.ref, h.Get("ETag"))
			case !strings.EqualFold(h.Get("Connection"), "keep-alive"):
				t.Fatalf("%s: Connection %q", tc.ref, h.Get("Connection"))
			}
			lm, err := http.ParseTime(h.Get("Last-Modified"))
			if err != nil {
				t.Fatalf("%s: Last-Modified %q: %v", tc.ref, h.Get("Last-Modified"), err)
			}
			if tc.ref == "main" && !lm.Equal(moved) {
				t.Fatalf("main: Last-Modified %v, want when main moved, %v", lm, moved)
			}

			// If-Modified-Since not older than Last-Modified: 304, same headers.
			resp, body = get(t, n.repo(tc.ref)+"/x86_64/APKINDEX.tar.gz", "If-Modified-Since", h.Get("Last-Modified"))
			if resp.StatusCode != http.StatusNotModified || len(body) != 0 || resp.Header.Get("X-Uplink-Commit") != a ||
				resp.Header.Get("Cache-Control") != tc.cacheControl {
				t.Fatalf("%s: IMS = Last-Modified gave %d %v", tc.ref, resp.StatusCode, resp.Header)
			}
			resp, _ = get(t, n.repo(tc.ref)+"/x86_64/APKINDEX.tar.gz", "If-Modified-Since", lm.Add(-time.Second).Format(http.TimeFormat))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: IMS older than Last-Modified gave %d", tc.ref, resp.StatusCode)
			}

			// HEAD: the headers of a GET, no body.
			resp, body = do(t, http.MethodHead, n.repo(tc.ref)+"/x86_64/hello-1.0-r0.apk")
			if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.Header.Get("Content-Length") != fmt.Sprint(len(pkg)) ||
				resp.Header.Get("Accept-Ranges") != "bytes" || resp.Header.Get("Cache-Control") != tc.cacheControl {
				t.Fatalf("%s: HEAD package: %d %v", tc.ref, resp.StatusCode, resp.Header)
			}
		}

		// Range on a package.
		resp, body := get(t, n.repo("main")+"/x86_64/hello-1.0-r0.apk", "Range", "bytes=10-19")
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, pkg[10:20]) ||
			resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 10-19/%d", len(pkg)) {
			t.Fatalf("Range: %d %q %v", resp.StatusCode, resp.Header.Get("Content-Range"), body)
		}
		resp, body = get(t, n.repo("main")+"/x86_64/hello-1.0-r0.apk")
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, pkg) || resp.Header.Get("Accept-Ranges") != "bytes" {
			t.Fatalf("package: %d, %d bytes", resp.StatusCode, len(body))
		}

		// Unknown app, ref, arch, file: 404 with a short plain-text reason.
		for _, p := range []string{
			"/main/acme/nope/x86_64/APKINDEX.tar.gz",
			"/nope/acme/hello/x86_64/APKINDEX.tar.gz",
			"/" + commitOf("unpublished") + "/acme/hello/x86_64/APKINDEX.tar.gz",
			"/main/acme/hello/aarch64/APKINDEX.tar.gz",
			"/main/acme/hello/x86_64/hello-9.9-r0.apk",
			"/main/acme/hello/x86_64/README.txt",
		} {
			resp, body := get(t, n.dist+p)
			if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") ||
				len(body) == 0 || len(body) > 200 || resp.Header.Get("X-Uplink-Commit") != "" {
				t.Errorf("%s: %d %q %q", p, resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
		}
		if resp, _ := do(t, http.MethodPost, n.repo("main")+"/x86_64/APKINDEX.tar.gz"); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST: %d", resp.StatusCode)
		}
	})
}

// TestRollbackNeverAnswers304 moves a branch back to an older commit right
// after a client downloaded the newer index: apk's next conditional
// request (its own download time as If-Modified-Since) must get the
// rolled-back index, not a 304.
func TestRollbackNeverAnswers304(t *testing.T) {
	n := start(t, baseConfig(t))
	key := apktest.NewKey(t)
	a, b := commitOf("A"), commitOf("B")
	n.publish(t, a, "main", hello(t, key, "1.0-r0", "A"))
	n.publish(t, b, "main", hello(t, key, "2.0-r0", "B"))
	url := n.repo("main") + "/x86_64/APKINDEX.tar.gz"
	resp, _ := get(t, url)
	if resp.Header.Get("X-Uplink-Commit") != b {
		t.Fatalf("before rollback: %s", resp.Header.Get("X-Uplink-Commit"))
	}
	downloaded := time.Now() // the client stamps its cache file now
	n.publish(t, a, "main", hello(t, key, "1.0-r0", "A"))

	resp, _ = get(t, url, "If-Modified-Since", downloaded.UTC().Format(http.TimeFormat))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Uplink-Commit") != a {
		t.Fatalf("after rollback: %d from %s, want 200 from A", resp.StatusCode, resp.Header.Get("X-Uplink-Commit"))
	}
	// Last-Modified carries the move time once the clock reaches it
	// (before, it is clamped to Date).
	refs, err := n.api.Refs(t.Context(), testApp)
	if err != nil {
		t.Fatal(err)
	}
	if moved := refs.Branches["main"].UpdatedAt; !moved.After(downloaded.Truncate(time.Second)) {
		t.Fatalf("main moved at %v, not after the client's copy (%v)", moved, downloaded)
	}
}

// TestKeepAlive: apk reuses a connection only when the answer says
// "Connection: keep-alive"; successive requests must ride one connection.
func TestKeepAlive(t *testing.T) {
	n := start(t, baseConfig(t))
	key := apktest.NewKey(t)
	files := hello(t, key, "1.0-r0", "A")
	n.publish(t, commitOf("A"), "main", files)

	// As apk does: a bare HTTP/1.1 request, then another on the same socket.
	conn, err := net.Dial("tcp", strings.TrimPrefix(strings.TrimSuffix(n.dist, "/distribution"), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for i, p := range []string{"/x86_64/APKINDEX.tar.gz", "/x86_64/hello-1.0-r0.apk", "/x86_64/nope-1.apk"} {
		fmt.Fprintf(conn, "GET /distribution/main/%s%s HTTP/1.1\r\nHost: uplink\r\nUser-Agent: libfetch/2.0\r\n\r\n", testApp, p)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d on the same connection: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if !strings.EqualFold(resp.Header.Get("Connection"), "keep-alive") || resp.Close {
			t.Fatalf("request %d (%d): Connection %q", i, resp.StatusCode, resp.Header.Get("Connection"))
		}
	}

	// And Go's pooled client sees its connection reused.
	var reused int
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if i.Reused {
			reused++
		}
	}}
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, n.repo("main")+"/x86_64/APKINDEX.tar.gz", nil)
		resp, err := http.DefaultClient.Do(req.WithContext(httptrace.WithClientTrace(t.Context(), trace)))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if reused < 2 {
		t.Fatalf("connection reused %d times in 3 requests", reused)
	}
}

// TestHostilePaths sends malformed and traversing paths over the wire and
// checks that none is answered with anything but 400/404, and that none
// reads the secret kept next to the store.
func TestHostilePaths(t *testing.T) {
	cfg := baseConfig(t)
	secret := "TOP-SECRET-" + commitOf("secret")
	for _, p := range []string{"secret.apk", "storage/secret.apk", "storage/deployments/secret.apk"} {
		os.MkdirAll(filepath.Dir(filepath.Join(cfg.DataDir, p)), 0o755)
		if err := os.WriteFile(filepath.Join(cfg.DataDir, p), []byte(secret), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n := start(t, cfg)
	n.publish(t, commitOf("A"), "main", hello(t, apktest.NewKey(t), "1.0-r0", "A"))
	host := strings.TrimPrefix(strings.TrimSuffix(n.dist, "/distribution"), "http://")
	for _, p := range []string{
		"/distribution/main/acme/hello/x86_64/../../../../secret.apk",
		"/distribution/main/acme/hello/x86_64/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.apk",
		"/distribution/main/acme/hello/x86_64/..%2f..%2f..%2f..%2fsecret.apk",
		"/distribution/main/acme/hello/%2e%2e/secret.apk",
		"/distribution/main/..%2F..%2F..%2F..%2F/hello/x86_64/secret.apk",
		"/distribution/..%2F..%2F..%2Fstorage/acme/hello/x86_64/secret.apk",
		"/distribution/main/acme/hello/x86_64/..%5c..%5csecret.apk",
		"/distribution/main/acme/hello/x86_64/secret.apk%00.apk",
		"/distribution/main/acme/hello/x86_64/%00",
		"/distribution/main/acme%00/hello/x86_64/APKINDEX.tar.gz",
		"/distribution/main/acme/hello/x86_64//APKINDEX.tar.gz",
		"/distribution/main/acme/hello/x86_64/" + strings.Repeat("a", 5000) + ".apk",
		"/distribution/main/acme/hello/x86_64/%ff%fe.apk",
		"/distribution/main/acme/hello/x86_64/%",
		"/distribution//acme/hello/x86_64/APKINDEX.tar.gz",
		"/distribution/main/acme/hello/.x86_64/APKINDEX.tar.gz",
		"/distribution/main/../../../../storage/secret.apk",
		"/distribution/./main/acme/hello/x86_64/APKINDEX.tar.gz",
		"/distribution/main/acme/hello/x86_64/hello-1.0-r0.apk/..",
	} {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: uplink\r\nConnection: close\r\n\r\n", p)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		body, _ := io.ReadAll(resp.Body)
		conn.Close()
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotFound {
			t.Errorf("%.80s: status %d, want 400 or 404", p, resp.StatusCode)
		}
		if bytes.Contains(body, []byte("TOP-SECRET")) {
			t.Fatalf("%s: leaked the file outside the artifact", p)
		}
	}
}

// TestStorageUnreachable: with nothing cached and storage down, a 503 with
// Retry-After (never a 500), and /readyz says so.
func TestStorageUnreachable(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Storage = "s3"
	cfg.S3 = s3.Config{Endpoint: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), Bucket: "gone", Region: "us-east-1",
		AccessKey: "x", SecretKey: "y", PathStyle: true}
	n := start(t, cfg)
	resp, _ := get(t, n.repo("main")+"/x86_64/APKINDEX.tar.gz")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("storage down: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	resp, _ = get(t, "http://"+n.srv.AdminAddr()+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with storage down: %d", resp.StatusCode)
	}
}

// TestAllowList: a client outside --allow-cidr gets 403, inside is served.
func TestAllowList(t *testing.T) {
	cfg := baseConfig(t)
	cfg.AllowCIDR = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	n := start(t, cfg)
	if resp, _ := get(t, n.repo("main")+"/x86_64/APKINDEX.tar.gz"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("outside the allow-list: %d", resp.StatusCode)
	}
	cfg = baseConfig(t)
	cfg.AllowCIDR = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	n = start(t, cfg)
	if resp, _ := get(t, n.repo("main")+"/x86_64/APKINDEX.tar.gz"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("inside the allow-list: %d, want 404 (nothing published)", resp.StatusCode)
	}
}
