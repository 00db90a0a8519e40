package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/server"
)

// inProcess starts a server in the test process, its configuration
// changed by each of opts, and returns the flags that point a command at
// it.
func inProcess(t *testing.T, opts ...func(*server.Config)) []string {
	t.Helper()
	const token = "keys-token-0123456789abcdef"
	cfg := server.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: t.TempDir(), Storage: "filesystem",
		IndexCacheSize: 64 << 20, Retention: 20, AdminTokens: []string{token}, MaxUpload: 64 << 20,
		RefCacheTTL: time.Second, ShutdownTimeout: 5 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := server.New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return []string{"--addr", srv.AdminAddr(), "--token", token}
}

// TestKeysCLI: keys add (the name from the file, as abuild installs it,
// or --name), list, rm; --json; errors exit non-zero.
func TestKeysCLI(t *testing.T) {
	clearUplinkEnv(t)
	flags := inProcess(t)
	key := apktest.NewKey(t)
	file := filepath.Join(t.TempDir(), "ci@acme.example-5f3e1a2b.rsa.pub")
	if err := os.WriteFile(file, key.PublicPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	keys := func(args ...string) (string, string, int) {
		return runCmd(cmdKeys, append(args, flags...)...)
	}
	out, errOut, code := keys("add", "acme/hello", file)
	if code != 0 || !strings.Contains(out, "registered key ci@acme.example-5f3e1a2b.rsa.pub for acme/hello") {
		t.Fatalf("keys add: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, code = keys("add", "acme/hello", file); code != 0 || !strings.Contains(out, "updated") {
		t.Fatalf("keys add again: exit %d %s", code, out)
	}
	out, errOut, code = keys("add", "acme/hello", file, "--name", "release.rsa.pub", "--json")
	var k api.Key
	if code != 0 || json.Unmarshal([]byte(out), &k) != nil || k.Name != "release.rsa.pub" || len(k.Fingerprint) != 64 {
		t.Fatalf("keys add --name --json: exit %d\n%s%s", code, out, errOut)
	}
	out, _, code = keys("list", "acme/hello")
	if code != 0 || !strings.Contains(out, "ci@acme.example-5f3e1a2b.rsa.pub") || !strings.Contains(out, "release.rsa.pub") || !strings.Contains(out, k.Fingerprint) {
		t.Fatalf("keys list: exit %d\n%s", code, out)
	}
	if out, _, code = keys("rm", "acme/hello", "release.rsa.pub"); code != 0 || !strings.Contains(out, "removed") {
		t.Fatalf("keys rm: exit %d %s", code, out)
	}
	out, _, code = keys("list", "acme/hello", "--json")
	var list struct{ Keys []api.Key }
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Keys) != 1 || list.Keys[0].Name != "ci@acme.example-5f3e1a2b.rsa.pub" {
		t.Fatalf("keys list --json: exit %d %s", code, out)
	}

	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"rm", "acme/hello", "release.rsa.pub"}, 1, "not found"},
		{[]string{"add", "acme/hello", file, "--name", "a/b.rsa.pub"}, 1, "key name"},
		{[]string{"add", "acme/hello", filepath.Join(t.TempDir(), "missing.rsa.pub")}, 1, "missing.rsa.pub"},
		{[]string{"add", "acme/hello"}, 2, "takes 2 arguments"},
		{[]string{"nope", "acme/hello"}, 2, "unknown subcommand"},
		{[]string{}, 2, "subcommand"},
		{[]string{"list", "acme"}, 1, "<org>/<app>"},
	} {
		_, errOut, code := keys(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.says) {
			t.Errorf("keys %v: exit %d, want %d saying %q:\n%s", tc.args, code, tc.code, tc.says, errOut)
		}
	}
}

// TestPublishRefusedCLI: a refused publish prints each problem and exits
// 1; after the fix, the same command publishes.
func TestPublishRefusedCLI(t *testing.T) {
	clearUplinkEnv(t)
	flags := inProcess(t)
	key := apktest.NewKey(t)
	files := apktest.BuildRepository(t, key, apktest.DefaultArch,
		apktest.Package{Name: "hello", Version: "1.0-r0"}, apktest.Package{Name: "world", Version: "2.0-r1"})
	repo := t.TempDir()
	apktest.WriteDir(t, repo, files)
	os.Remove(filepath.Join(repo, "x86_64", "world-2.0-r1.apk"))
	commit := sha("refused")
	args := append([]string{repo, "--app", "acme/hello", "--commit", commit, "--branch", "main"}, flags...)
	out, errOut, code := runCmd(cmdPublish, args...)
	if code != 1 || !strings.Contains(errOut, "publish refused (incomplete)") ||
		!strings.Contains(errOut, "  x86_64/world-2.0-r1.apk: listed in the index but not in the build") {
		t.Fatalf("refused publish: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	apktest.WriteDir(t, repo, files)
	out, errOut, code = runCmd(cmdPublish, args...)
	if code != 0 || !strings.Contains(out, "published acme/hello "+commit) {
		t.Fatalf("publish after the fix: exit %d\n%s%s", code, out, errOut)
	}
}
