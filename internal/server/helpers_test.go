package server_test

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/server"
	"github.com/uplinkhq/uplink/internal/testenv"
	"github.com/uplinkhq/uplink/storage/s3"
)

const (
	testToken = "test-token-0123456789abcdef"
	testApp   = "acme/hello"
)

// node is one running uplink.
type node struct {
	srv    *server.Server
	api    *client.Client
	dist   string // http://host:port/distribution
	cfg    server.Config
	cancel func()
}

// baseConfig is a server on loopback with a random port, its own data
// dir and, unless changed, the filesystem driver.
func baseConfig(t *testing.T) server.Config {
	return server.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: t.TempDir(), Storage: "filesystem",
		RedisTimeout: 200 * time.Millisecond, RedisTTL: time.Minute, RefCacheTTL: 5 * time.Second,
		IndexCacheSize: 64 << 20, Retention: 20, AdminTokens: []string{testToken}, MaxUpload: 64 << 20,
		ShutdownTimeout: 10 * time.Second,
	}
}

// s3Config points cfg at a fresh bucket of a real versitygw.
func s3Config(t *testing.T, cfg server.Config) server.Config {
	gw := testenv.StartS3(t)
	cfg.Storage = "s3"
	cfg.S3 = s3.Config{Endpoint: gw.Endpoint, Bucket: gw.NewBucket(t), Region: gw.Region,
		AccessKey: gw.AccessKey, SecretKey: gw.SecretKey, PathStyle: true}
	return cfg
}

// drivers runs fn once per storage driver.
func drivers(t *testing.T, fn func(t *testing.T, cfg server.Config)) {
	t.Run("filesystem", func(t *testing.T) { fn(t, baseConfig(t)) })
	t.Run("s3", func(t *testing.T) { fn(t, s3Config(t, baseConfig(t))) })
}

func start(t *testing.T, cfg server.Config) *node {
	t.Helper()
	ctx := context.Background()
	srv, err := server.New(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	n := &node{srv: srv, cfg: cfg, api: client.New(srv.AdminAddr(), testToken), dist: "http://" + srv.DistributionAddr() + "/distribution"}
	stopped := false
	n.cancel = func() {
		if stopped {
			return
		}
		stopped = true
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}
	t.Cleanup(n.cancel)
	return n
}

// commitOf makes a deterministic full SHA from a label.
func commitOf(label string) string { return fmt.Sprintf("%x", sha1.Sum([]byte(label))) }

// hello builds the test app's repository: package hello at version, whose
// file /usr/share/hello/VERSION holds content.
func hello(t *testing.T, key apktest.Key, version, content string) map[string][]byte {
	return apktest.BuildRepository(t, key, apktest.DefaultArch, apktest.Package{
		Name: "hello", Version: version, Description: "test app",
		Files: []apktest.File{{Path: "usr/share/hello/VERSION", Data: []byte(content)}},
	})
}

// publish uploads files (packages first) and publishes them as commit on
// branch, through the admin API as CI would.
func (n *node) publish(t *testing.T, commit, branch string, files map[string][]byte, tags ...string) api.Build {
	t.Helper()
	dir := t.TempDir()
	apktest.WriteDir(t, dir, files)
	ctx := context.Background()
	var index []string
	for p := range files {
		arch, name, _ := strings.Cut(p, "/")
		if name == "APKINDEX.tar.gz" {
			index = append(index, p)
			continue
		}
		if err := n.api.Upload(ctx, testApp, commit, arch, name, filepath.Join(dir, p)); err != nil {
			t.Fatalf("upload %s: %v", p, err)
		}
	}
	for _, p := range index {
		arch, name, _ := strings.Cut(p, "/")
		if err := n.api.Upload(ctx, testApp, commit, arch, name, filepath.Join(dir, p)); err != nil {
			t.Fatalf("upload %s: %v", p, err)
		}
	}
	b, err := n.api.Publish(ctx, testApp, api.PublishRequest{Commit: commit, Branch: branch, Tags: tags, Message: "commit " + commit[:7]})
	if err != nil {
		t.Fatalf("publish %s: %v", commit, err)
	}
	return b
}

// repo is the repository URL of ref, as an instance's repositories file
// would hold it.
func (n *node) repo(ref string) string { return n.dist + "/" + ref + "/" + testApp }

// installed installs hello from repoURL with go-apk and returns the
// VERSION file it put in place.
func installed(t *testing.T, repoURL string, key apktest.Key) string {
	t.Helper()
	root, err := apktest.Install(t, context.Background(), repoURL, key, "hello")
	if err != nil {
		t.Fatalf("install from %s: %v", repoURL, err)
	}
	b, err := os.ReadFile(filepath.Join(root, "usr/share/hello/VERSION"))
	if err != nil {
		t.Fatalf("installed file: %v", err)
	}
	return string(b)
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	return do(t, http.MethodGet, url, hdr...)
}

func do(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", url, err)
	}
	return resp, b
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readFile(t *testing.T, root, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// testenvRedis starts a real Redis for the test and returns its address.
func testenvRedis(t *testing.T) string { return testenv.StartRedis(t).Addr }

func asClientError(err error, target **client.Error) bool { return errors.As(err, target) }
