package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/server"
	"github.com/uplinkhq/uplink/internal/testenv"
)

// startLogged is start with the server's log (the access log too) kept.
func startLogged(t *testing.T, cfg server.Config) (*node, *testenv.Buffer) {
	t.Helper()
	logs := &testenv.Buffer{}
	cfg.AccessLog = true
	srv, err := server.New(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &node{srv: srv, cfg: cfg, api: client.New(srv.AdminAddr(), testToken),
		dist: "http://" + srv.DistributionAddr() + "/distribution"}, logs
}

// noFollow does one request without following redirects.
func noFollow(t *testing.T, method, u string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	resp.Body.Close()
	return resp
}

// TestS3Redirect: with --s3-redirect on a real versitygw, go-apk installs
// through a 302 to a presigned URL that versitygw honours: the package's
// bytes never go through uplink (its package byte counter stays 0), the
// 302s show in the requests metric and the access log, the index is
// still served by uplink, and a package asked for through a branch that
// moved is redirected to the earlier commit's object. The artifact cache
// is on, and never asked: the redirect wins.
func TestS3Redirect(t *testing.T) {
	cfg := s3Config(t, baseConfig(t))
	cfg.S3Redirect, cfg.S3RedirectExpiry = true, time.Minute
	cfg.ArtifactCacheSize = 64 << 20 // the redirect wins over the local cache
	n, logs := startLogged(t, cfg)
	key := apktest.NewKey(t)
	a, b := commitOf("A"), commitOf("B")
	files := hello(t, key, "1.0-r0", "A")
	n.publish(t, a, "main", files)

	if got := installed(t, n.repo("main"), key); got != "A" {
		t.Fatalf("main installs %q, want A", got)
	}
	pkgURL := n.repo("main") + "/x86_64/hello-1.0-r0.apk"
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		resp := noFollow(t, method, pkgURL)
		loc, err := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusFound || err != nil || loc.Host != cfg.S3.Endpoint ||
			loc.Query().Get("X-Amz-Expires") != "60" || !strings.HasSuffix(loc.Path, "/deployments/acme/hello/"+a+"/x86_64/hello-1.0-r0.apk") {
			t.Fatalf("%s: %d to %q, want 302 to a presigned URL of %s's package on %s", method, resp.StatusCode, resp.Header.Get("Location"), a, cfg.S3.Endpoint)
		}
		if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("X-Uplink-Commit") != a {
			t.Errorf("%s: Cache-Control %q, X-Uplink-Commit %q", method, resp.Header.Get("Cache-Control"), resp.Header.Get("X-Uplink-Commit"))
		}
	}
	// The URL works without credentials, and gives the package's bytes.
	resp, body := get(t, pkgURL)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, files["x86_64/hello-1.0-r0.apk"]) {
		t.Fatalf("following the redirect: %d, %d bytes, want the package's %d", resp.StatusCode, len(body), len(files["x86_64/hello-1.0-r0.apk"]))
	}
	// The index is uplink's.
	resp, _ = get(t, n.repo("main")+"/x86_64/APKINDEX.tar.gz")
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Host != n.srv.DistributionAddr() {
		t.Fatalf("index: %d from %s", resp.StatusCode, resp.Request.URL.Host)
	}

	// apk update, the branch moves, apk add: the earlier commit's object.
	ix, err := apktest.FetchIndex(context.Background(), n.repo("main"), key, apktest.DefaultArch)
	if err != nil {
		t.Fatal(err)
	}
	n.publish(t, b, "main", hello(t, key, "2.0-r0", "B"))
	root, err := ix.Install(t, context.Background(), "hello")
	if err != nil {
		t.Fatalf("index from before the move, package after: %v", err)
	}
	if got := readFile(t, root, "usr/share/hello/VERSION"); got != "A" {
		t.Fatalf("fallback installed %q, want A", got)
	}
	if resp := noFollow(t, http.MethodGet, pkgURL); resp.StatusCode != http.StatusFound || resp.Header.Get("X-Uplink-Commit") != a {
		t.Fatalf("fallback: %d from %q, want 302 to A's", resp.StatusCode, resp.Header.Get("X-Uplink-Commit"))
	}
	if got := installed(t, n.repo("main"), key); got != "B" {
		t.Fatalf("after publishing B, main installs %q", got)
	}

	if v := metric(t, n, `uplink_distribution_bytes_total{file="package"}`); v != 0 {
		t.Errorf("%v package bytes went through uplink, want 0", v)
	}
	if v := metric(t, n, `uplink_distribution_requests_total{code="302",file="package",ref_kind="branch"}`); v < 6 {
		t.Errorf("302s counted: %v, want at least 6", v)
	}
	if v := metric(t, n, `uplink_distribution_requests_total{code="200",file="package",ref_kind="branch"}`); v != 0 {
		t.Errorf("packages served by uplink: %v, want 0", v)
	}
	for _, m := range []string{"uplink_artifact_cache_misses_total", "uplink_artifact_cache_fills_total", "uplink_artifact_cache_hits_total"} {
		if v := metric(t, n, m); v != 0 {
			t.Errorf("%s %v: a redirected package went through the artifact cache", m, v)
		}
	}
	if !strings.Contains(logs.String(), "uri=/distribution/main/acme/hello/x86_64/hello-1.0-r0.apk status=302 bytes=0") {
		t.Errorf("no access log line of a 302:\n%s", logs)
	}
}

// TestS3RedirectFilesystem: the filesystem driver ignores --s3-redirect
// (serve refuses it there): packages are served as usual.
func TestS3RedirectFilesystem(t *testing.T) {
	cfg := baseConfig(t)
	cfg.S3Redirect = true
	n := start(t, cfg)
	key := apktest.NewKey(t)
	n.publish(t, commitOf("A"), "main", hello(t, key, "1.0-r0", "A"))
	if resp := noFollow(t, http.MethodGet, n.repo("main")+"/x86_64/hello-1.0-r0.apk"); resp.StatusCode != http.StatusOK {
		t.Fatalf("package: %d, want 200", resp.StatusCode)
	}
	if got := installed(t, n.repo("main"), key); got != "A" {
		t.Fatalf("main installs %q, want A", got)
	}
}
