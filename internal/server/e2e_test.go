package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/server"
)

// TestEndToEnd is the mission through the running server with an
// independent apk client (go-apk), on each storage driver: a branch URL
// follows publishes, a commit URL stays put, a package fetched after the
// branch moved still installs, and a tampered index is refused.
func TestEndToEnd(t *testing.T) {
	drivers(t, func(t *testing.T, cfg server.Config) {
		n := start(t, cfg)
		key := apktest.NewKey(t)
		a, b, c := commitOf("A"), commitOf("B"), commitOf("C")

		n.publish(t, a, "main", hello(t, key, "1.0-r0", "A"))
		if got := installed(t, n.repo("main"), key); got != "A" {
			t.Fatalf("main installs %q, want A", got)
		}
		if got := installed(t, n.repo(a), key); got != "A" {
			t.Fatalf("%s installs %q, want A", a, got)
		}
		if got := installed(t, n.repo(a[:9]), key); got != "A" {
			t.Fatalf("abbreviated %s installs %q, want A", a[:9], got)
		}

		n.publish(t, b, "main", hello(t, key, "2.0-r0", "B"))
		if got := installed(t, n.repo("main"), key); got != "B" {
			t.Fatalf("after publishing B, main installs %q", got)
		}
		if got := installed(t, n.repo(a), key); got != "A" {
			t.Fatalf("after publishing B, %s installs %q, want A", a, got)
		}

		// apk update, then the branch moves, then apk add.
		ix, err := apktest.FetchIndex(context.Background(), n.repo("main"), key, apktest.DefaultArch)
		if err != nil {
			t.Fatal(err)
		}
		n.publish(t, c, "main", hello(t, key, "3.0-r0", "C"))
		root, err := ix.Install(t, context.Background(), "hello")
		if err != nil {
			t.Fatalf("index from before the move, packages after: %v", err)
		}
		if got := readFile(t, root, "usr/share/hello/VERSION"); got != "B" {
			t.Fatalf("fallback installed %q, want B", got)
		}
		resp, _ := get(t, n.repo("main")+"/x86_64/hello-2.0-r0.apk")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Uplink-Commit") != b {
			t.Fatalf("fallback: %d from %q, want 200 from B", resp.StatusCode, resp.Header.Get("X-Uplink-Commit"))
		}
		if got := installed(t, n.repo("main"), key); got != "C" {
			t.Fatalf("after publishing C, main installs %q", got)
		}

		// A repository whose index was altered after signing.
		files := hello(t, key, "4.0-r0", "D")
		files["x86_64/APKINDEX.tar.gz"] = apktest.Tamper(files["x86_64/APKINDEX.tar.gz"])
		n.publish(t, commitOf("D"), "tampered", files)
		if _, err := apktest.Install(t, context.Background(), n.repo("tampered"), key, "hello"); err == nil ||
			!strings.Contains(strings.ToLower(err.Error()), "signature") {
			t.Fatalf("tampered index: got %v, want a signature error", err)
		}
	})
}
