package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/testenv"
)

// TestChaosRanges: one request for 5,000 ranges of a package the real
// binary serves from S3 costs a handful of S3 requests (counted by a proxy
// in front of versitygw), not one per range, and answers the whole file.
func TestChaosRanges(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	gw := testenv.StartS3(t)
	bucket := gw.NewBucket(t)
	proxy := testenv.StartCutProxy(t, gw.Endpoint)
	listen, dist, admin := listenEnv(t)
	proc := startServe(t, t.TempDir(), cliEnv(append(listen, s3Env(gw, proxy.Addr, bucket, "")...)...))
	cl := client.New(admin, replicaToken)
	waitReady(t, proc, cl)

	// A package of 64 KiB that gzip cannot shrink, so that 5,000 one-byte
	// ranges two bytes apart are all distinct and satisfiable.
	noise := make([]byte, 64<<10)
	rand.Read(noise)
	files := apktest.BuildRepository(t, apktest.NewKey(t), apktest.DefaultArch, apktest.Package{Name: "big", Version: "1.0-r0",
		Files: []apktest.File{{Path: "usr/share/big/noise", Data: noise}}})
	dir := t.TempDir()
	apktest.WriteDir(t, dir, files)
	commit := sha("chaos-ranges")
	ctx := context.Background()
	for _, p := range []string{"x86_64/big-1.0-r0.apk", "x86_64/APKINDEX.tar.gz"} {
		arch, name, _ := strings.Cut(p, "/")
		if err := cl.Upload(ctx, "acme/big", commit, arch, name, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.Publish(ctx, "acme/big", api.PublishRequest{Commit: commit, Branch: "main"}); err != nil {
		t.Fatal(err)
	}
	pkg := files["x86_64/big-1.0-r0.apk"]
	if len(pkg) < 10_000 {
		t.Fatalf("package of %d bytes: too small for 5,000 distinct ranges", len(pkg))
	}

	ranges := make([]string, 5000)
	for i := range ranges {
		ranges[i] = fmt.Sprintf("%d-%d", 2*i, 2*i)
	}
	url := dist + "/distribution/" + commit + "/acme/big/x86_64/big-1.0-r0.apk"
	// A plain download first: the commit's resolution is then in memory,
	// so what follows counts only the reads of the package itself.
	if resp, err := http.Get(url); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("plain download: %v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Range", "bytes="+strings.Join(ranges, ","))
	before := proxy.Requests(http.MethodGet) + proxy.Requests(http.MethodHead)
	start := time.Now()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	s3Requests := proxy.Requests(http.MethodGet) + proxy.Requests(http.MethodHead) - before
	t.Logf("5,000 ranges: %d in %v, %d S3 requests", resp.StatusCode, took, s3Requests)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, pkg) {
		t.Fatalf("5,000 ranges: %d, %d bytes (err %v); want 200 and the whole package of %d bytes", resp.StatusCode, len(body), err, len(pkg))
	}
	if s3Requests > 3 {
		t.Fatalf("5,000 ranges cost %d S3 requests; want a handful (at most 3)", s3Requests)
	}
}
