package server_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/server"
	"github.com/uplinkhq/uplink/internal/testenv"
)

// worldAPK is the file CI rebuilds under the same name.
const worldAPK = apktest.DefaultArch + "/world-2.0-r1.apk"

// world is a repository with world-2.0-r1, whose one file holds build:
// each build has other bytes, hence another C: in its index.
func world(t *testing.T, key apktest.Key, build string) map[string][]byte {
	files := apktest.BuildRepository(t, key, apktest.DefaultArch, apktest.Package{
		Name: "world", Version: "2.0-r1", Description: "rebuilt under the same name",
		Files: []apktest.File{{Path: "usr/share/world/BUILD", Data: []byte(build)}},
	})
	if files[worldAPK] == nil {
		t.Fatalf("no %s in the repository", worldAPK)
	}
	return files
}

// from is an HTTP client whose requests come from a loopback address
// other than 127.0.0.1: another distribution client.
func from(t *testing.T, ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// fetch asks for url with c (nil: from 127.0.0.1, as go-apk does) and
// returns the status, the answering commit and the body.
func fetch(t *testing.T, c *http.Client, method, url string, hdr ...string) (int, string, []byte) {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("X-Uplink-Commit"), body
}

// installWorld installs world from ix (fetched earlier) with go-apk, which
// checks the package against the index's C: as apk does, and returns the
// build it installed.
func installWorld(t *testing.T, ix *apktest.Index) string {
	t.Helper()
	root, err := ix.Install(t, context.Background(), "world")
	if err != nil {
		t.Fatalf("install world from %s with its index of earlier: %v", ix.URL, err)
	}
	return readFile(t, root, "usr/share/world/BUILD")
}

const servedMetric = `uplink_distribution_client_index_hits_total{result="served"}`

// CI rebuilds world-2.0-r1 under the same name between a client's index
// fetch and its install (apk-protocol.md §7.6): the client still gets the
// bytes its index names, from the commit whose index it has.
func TestSameNamedRebuild(t *testing.T) {
	drivers(t, func(t *testing.T, cfg server.Config) {
		n := start(t, cfg)
		key := apktest.NewKey(t)
		ctx := context.Background()
		a, b := commitOf("rebuild A"), commitOf("rebuild B")
		filesA, filesB := world(t, key, "A"), world(t, key, "B")
		if bytes.Equal(filesA[worldAPK], filesB[worldAPK]) {
			t.Fatal("the rebuild must have other bytes")
		}
		pkgURL := n.repo("main") + "/" + worldAPK
		indexURL := n.repo("main") + "/" + apktest.DefaultArch + "/APKINDEX.tar.gz"
		other, third := from(t, "127.0.0.2"), from(t, "127.0.0.3")

		n.publish(t, a, "main", filesA)
		ixA, err := apktest.FetchIndex(ctx, n.repo("main"), key, apktest.DefaultArch)
		if err != nil {
			t.Fatal(err)
		}
		if code, commit, _ := fetch(t, third, http.MethodGet, indexURL); code != http.StatusOK || commit != a {
			t.Fatalf("index for 127.0.0.3: %d from %s", code, commit)
		}
		n.publish(t, b, "main", filesB)

		if got := installWorld(t, ixA); got != "A" {
			t.Fatalf("the client holding A's index installed build %q", got)
		}
		if code, commit, body := fetch(t, nil, http.MethodGet, pkgURL); code != http.StatusOK || commit != a || !bytes.Equal(body, filesA[worldAPK]) {
			t.Fatalf("package for the client holding A's index: %d from %s, A's bytes: %v", code, commit, bytes.Equal(body, filesA[worldAPK]))
		}
		if got := metric(t, n, servedMetric); got != 2 {
			t.Fatalf("%s = %v, want 2 (go-apk's download and ours)", servedMetric, got)
		}
		// An address that never fetched main's index is not steered by
		// 127.0.0.1's: it gets the current commit.
		if code, commit, body := fetch(t, other, http.MethodGet, pkgURL); code != http.StatusOK || commit != b || !bytes.Equal(body, filesB[worldAPK]) {
			t.Fatalf("package for another address: %d from %s", code, commit)
		}

		// A HEAD of the index gives the client no index: 127.0.0.3 still
		// holds A's. A 304 leaves it with its copy of the current commit's.
		if code, commit, _ := fetch(t, third, http.MethodHead, indexURL); code != http.StatusOK || commit != b {
			t.Fatalf("HEAD index: %d from %s", code, commit)
		}
		if _, commit, _ := fetch(t, third, http.MethodGet, pkgURL); commit != a {
			t.Fatalf("after a HEAD of the index, 127.0.0.3's package came from %s, want A", commit)
		}
		code, _, _ := fetch(t, third, http.MethodGet, indexURL, "If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")
		if code != http.StatusNotModified {
			t.Fatalf("index with If-Modified-Since in the future: %d", code)
		}
		if _, commit, body := fetch(t, third, http.MethodGet, pkgURL); commit != b || !bytes.Equal(body, filesB[worldAPK]) {
			t.Fatalf("after a 304 of B's index, 127.0.0.3's package came from %s, want B", commit)
		}

		// A fresh client fetching the index now gets B's, and B's bytes.
		ixB, err := apktest.FetchIndex(ctx, n.repo("main"), key, apktest.DefaultArch)
		if err != nil {
			t.Fatal(err)
		}
		if got := installWorld(t, ixB); got != "B" {
			t.Fatalf("the client holding B's index installed build %q", got)
		}
		if _, commit, _ := fetch(t, nil, http.MethodGet, pkgURL); commit != b {
			t.Fatalf("after fetching B's index, 127.0.0.1's package came from %s", commit)
		}
		// Through the commit itself nothing is remembered or steered.
		if _, commit, body := fetch(t, nil, http.MethodGet, n.repo(a)+"/"+worldAPK); commit != a || !bytes.Equal(body, filesA[worldAPK]) {
			t.Fatalf("through commit A: %s", commit)
		}
		if got := metric(t, n, servedMetric); got != 3 {
			t.Fatalf("%s = %v, want 3", servedMetric, got)
		}
	})
}

// A remembered commit that left the branch's fallback window is not
// served from any more: the branch's current commit answers.
func TestSameNamedRebuildOutsideWindow(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Retention = 2 // the current commit and one before
	n := start(t, cfg)
	key := apktest.NewKey(t)
	a, b, c := commitOf("window A"), commitOf("window B"), commitOf("window C")
	n.publish(t, a, "main", world(t, key, "A"))
	pkgURL := n.repo("main") + "/" + worldAPK
	indexURL := n.repo("main") + "/" + apktest.DefaultArch + "/APKINDEX.tar.gz"
	fetch(t, nil, http.MethodGet, indexURL)
	n.publish(t, b, "main", world(t, key, "B"))
	if _, commit, _ := fetch(t, nil, http.MethodGet, pkgURL); commit != a {
		t.Fatalf("within the window: from %s, want A", commit)
	}
	filesC := world(t, key, "C")
	n.publish(t, c, "main", filesC)
	if _, commit, body := fetch(t, nil, http.MethodGet, pkgURL); commit != c || !bytes.Equal(body, filesC[worldAPK]) {
		t.Fatalf("outside the window: from %s, want C", commit)
	}
	if got := metric(t, n, `uplink_distribution_client_index_hits_total{result="outside_window"}`); got != 1 {
		t.Fatalf("outside_window = %v", got)
	}
}

// Two replicas sharing Redis: the index comes from one, the packages from
// the other. With Redis down, both still answer, as without remembering.
func TestSameNamedRebuildAcrossReplicas(t *testing.T) {
	rdb := testenv.StartRedis(t)
	nodes := replicas(t, rdb, 2)
	n1, n2 := nodes[0], nodes[1]
	key := apktest.NewKey(t)
	ctx := context.Background()
	a, b := commitOf("replicas A"), commitOf("replicas B")
	filesA, filesB := world(t, key, "A"), world(t, key, "B")

	n1.publish(t, a, "main", filesA)
	ixA, err := apktest.FetchIndex(ctx, n1.repo("main"), key, apktest.DefaultArch)
	if err != nil {
		t.Fatal(err)
	}
	n1.publish(t, b, "main", filesB)
	// HEAD, which remembers nothing, until n2 heard of the publish.
	eventually(t, 5*time.Second, "n2 serving B", func() bool {
		_, commit, _ := fetch(t, nil, http.MethodHead, n2.repo("main")+"/"+apktest.DefaultArch+"/APKINDEX.tar.gz")
		return commit == b
	})

	viaN2 := *ixA
	viaN2.URL = n2.repo("main")
	if got := installWorld(t, &viaN2); got != "A" {
		t.Fatalf("index from n1, package from n2: build %q", got)
	}
	if _, commit, _ := fetch(t, nil, http.MethodGet, n2.repo("main")+"/"+worldAPK); commit != a {
		t.Fatalf("n2 answered from %s, want A", commit)
	}
	if got := metric(t, n2, servedMetric); got != 2 {
		t.Fatalf("n2: %s = %v, want 2", servedMetric, got)
	}

	// Redis down: every answer is still a 200, promptly, from the
	// current commit; the failures are counted.
	rdb.Stop()
	start := time.Now()
	for _, n := range nodes {
		if code, commit, body := fetch(t, nil, http.MethodGet, n.repo("main")+"/"+worldAPK); code != http.StatusOK || commit != b || !bytes.Equal(body, filesB[worldAPK]) {
			t.Fatalf("with Redis down: %d from %s", code, commit)
		}
	}
	ixB, err := apktest.FetchIndex(ctx, n1.repo("main"), key, apktest.DefaultArch)
	if err != nil {
		t.Fatalf("index with Redis down: %v", err)
	}
	ixB.URL = n2.repo("main")
	if got := installWorld(t, ixB); got != "B" {
		t.Fatalf("with Redis down, a fresh client installed build %q", got)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("with Redis down, four requests took %v", took)
	}
	for i, n := range nodes {
		if metric(t, n, "uplink_distribution_client_index_redis_errors_total") == 0 {
			t.Fatalf("n%d: Redis failures not counted", i+1)
		}
	}
}
