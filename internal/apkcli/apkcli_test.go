package apkcli

import (
	"bytes"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/apktest"
)

const prefix = "/distribution/main/org/app"

// repo is a mutable repository served over HTTP below prefix, with
// Last-Modified and If-Modified-Since handled as uplink serves them
// (http.ServeContent). It records every request.
type repo struct {
	mu       sync.Mutex
	files    map[string][]byte
	modTime  time.Time // of every file: the last publish
	requests []request
	url      string
}

type request struct {
	path   string // below the repository base
	header http.Header
}

func newRepo(t *testing.T) *repo {
	r := &repo{files: map[string][]byte{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		name := strings.TrimPrefix(req.URL.Path, prefix+"/")
		r.mu.Lock()
		r.requests = append(r.requests, request{name, req.Header.Clone()})
		b, ok := r.files[name]
		mod := r.modTime
		r.mu.Unlock()
		if !ok || !strings.HasPrefix(req.URL.Path, prefix+"/") {
			http.NotFound(w, req)
			return
		}
		http.ServeContent(w, req, name, mod, bytes.NewReader(b))
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL + prefix
	return r
}

func (r *repo) publish(files map[string][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.files = maps.Clone(files)
	r.modTime = time.Now()
}

// setModTime backdates every file, e.g. to before a client's cached copy.
func (r *repo) setModTime(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.modTime = t
}

// indexRequests returns the index requests since the last call.
func (r *repo) indexRequests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []request
	for _, q := range r.requests {
		if strings.HasSuffix(q.path, "/APKINDEX.tar.gz") {
			out = append(out, q)
		}
	}
	r.requests = nil
	return out
}

func hello(version string, extra ...apktest.File) apktest.Package {
	return apktest.Package{
		Name: "hello", Version: version, Description: "Hello world",
		Depends: []string{"libhello"},
		Files: append([]apktest.File{
			{Path: "usr/share/hello/VERSION", Data: []byte(version + "\n")},
			{Path: "usr/bin/hello", Mode: 0o755, Data: []byte("#!/bin/sh\necho hello\n")},
			{Path: "usr/bin/hi", Mode: fs.ModeSymlink, Data: []byte("hello")},
		}, extra...),
	}
}

var libhello = apktest.Package{
	Name: "libhello", Version: "1.0-r0", Arch: "noarch", Description: "Hello library",
	Files: []apktest.File{{Path: "usr/lib/libhello.txt", Data: []byte("lib\n")}},
}

// newRoot returns a root with the repository and key configured, as
// uplink configures a container.
func newRoot(t *testing.T, repoURL string, key apktest.Key) string {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc/apk/keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, root, "etc/apk/keys/"+key.Name, key.PublicPEM())
	write(t, root, "etc/apk/repositories", []byte("# uplink\n\n"+repoURL+"\n"))
	write(t, root, "etc/apk/arch", []byte("x86_64\n"))
	return root
}

func write(t *testing.T, root, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, root, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, root string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(append([]string{"--root", root}, args...), &out, &errb)
	t.Logf("apk %s -> %d\nstdout:\n%sstderr:\n%s", strings.Join(args, " "), code, out.String(), errb.String())
	return result{code, out.String(), errb.String()}
}

func mustApk(t *testing.T, root string, args ...string) string {
	t.Helper()
	r := run(t, root, args...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("apk %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

func TestAddUpgradeDel(t *testing.T) {
	key := apktest.NewKey(t)
	r := newRepo(t)
	r.publish(apktest.BuildRepository(t, key, "x86_64", hello("1.0-r0",
		apktest.File{Path: "usr/share/hello/only-in-1.0", Data: []byte("old\n")}), libhello))
	root := newRoot(t, r.url, key)

	out := mustApk(t, root, "update")
	if !strings.Contains(out, "fetch "+r.url+"/x86_64/APKINDEX.tar.gz") || !strings.Contains(out, "OK: 2 distinct packages available") {
		t.Errorf("update output:\n%s", out)
	}
	out = mustApk(t, root, "add", "hello")
	if strings.Contains(out, "fetch ") {
		t.Errorf("add right after update fetched the index again:\n%s", out)
	}
	for _, want := range []string{"(1/2) Installing libhello (1.0-r0)", "(2/2) Installing hello (1.0-r0)", "OK: "} {
		if !strings.Contains(out, want) {
			t.Errorf("add output lacks %q:\n%s", want, out)
		}
	}
	if got := read(t, root, "usr/share/hello/VERSION"); got != "1.0-r0\n" {
		t.Errorf("VERSION = %q", got)
	}
	if got := read(t, root, "usr/lib/libhello.txt"); got != "lib\n" {
		t.Errorf("libhello.txt = %q", got)
	}
	if fi, err := os.Stat(filepath.Join(root, "usr/bin/hello")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("usr/bin/hello: %v, %v", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(root, "usr/bin/hi")); err != nil || target != "hello" {
		t.Errorf("usr/bin/hi -> %q, %v", target, err)
	}
	if got := read(t, root, "etc/apk/world"); got != "hello\n" {
		t.Errorf("world = %q", got)
	}
	db := read(t, root, "lib/apk/db/installed")
	for _, want := range []string{"P:hello\nV:1.0-r0\n", "P:libhello\nV:1.0-r0\n", "F:usr/share/hello\nR:VERSION\nZ:Q1", "R:hello\na:0:0:0755\n"} {
		if !strings.Contains(db, want) {
			t.Errorf("installed db lacks %q:\n%s", want, db)
		}
	}
	if got := mustApk(t, root, "info", "-v"); got != "libhello-1.0-r0\nhello-1.0-r0\n" {
		t.Errorf("info -v = %q", got)
	}

	// A second add of an installed package changes nothing.
	if out := mustApk(t, root, "add", "hello"); strings.Contains(out, "Installing") {
		t.Errorf("second add installed again:\n%s", out)
	}

	// A new version: add without -u keeps the installed one, -u upgrades.
	r.publish(apktest.BuildRepository(t, key, "x86_64", hello("1.1-r0"), libhello))
	mustApk(t, root, "--force-refresh", "update")
	if out := mustApk(t, root, "add", "hello"); strings.Contains(out, "Upgrading") {
		t.Errorf("add without -u upgraded:\n%s", out)
	}
	if got := read(t, root, "usr/share/hello/VERSION"); got != "1.0-r0\n" {
		t.Errorf("VERSION after add without -u = %q", got)
	}
	out = mustApk(t, root, "add", "--upgrade", "hello")
	if !strings.Contains(out, "(1/1) Upgrading hello (1.0-r0 -> 1.1-r0)") {
		t.Errorf("upgrade output:\n%s", out)
	}
	if got := read(t, root, "usr/share/hello/VERSION"); got != "1.1-r0\n" {
		t.Errorf("VERSION after upgrade = %q", got)
	}
	if _, err := os.Lstat(filepath.Join(root, "usr/share/hello/only-in-1.0")); !os.IsNotExist(err) {
		t.Errorf("file of the old version not removed: %v", err)
	}
	if got := mustApk(t, root, "info", "hello"); got != "hello-1.1-r0\n" {
		t.Errorf("info hello = %q", got)
	}

	// del removes the package and the dependency nothing else needs.
	out = mustApk(t, root, "del", "hello")
	if !strings.Contains(out, "Purging hello (1.1-r0)") || !strings.Contains(out, "Purging libhello (1.0-r0)") {
		t.Errorf("del output:\n%s", out)
	}
	for _, f := range []string{"usr/share/hello/VERSION", "usr/bin/hello", "usr/bin/hi", "usr/lib/libhello.txt", "usr/share/hello"} {
		if _, err := os.Lstat(filepath.Join(root, f)); !os.IsNotExist(err) {
			t.Errorf("%s still there after del: %v", f, err)
		}
	}
	if got := mustApk(t, root, "info"); got != "" {
		t.Errorf("info after del = %q", got)
	}
}

func TestAddWithoutUpdateFetchesIndex(t *testing.T) {
	key := apktest.NewKey(t)
	r := newRepo(t)
	r.publish(apktest.BuildRepository(t, key, "x86_64", hello("1.0-r0"), libhello))
	root := newRoot(t, r.url, key)
	out := mustApk(t, root, "add", "hello")
	if !strings.Contains(out, "fetch ") || !strings.Contains(out, "Installing hello (1.0-r0)") {
		t.Errorf("add output:\n%s", out)
	}
}

func TestFailures(t *testing.T) {
	key := apktest.NewKey(t)
	files := apktest.BuildRepository(t, key, "x86_64", hello("1.0-r0"), libhello)

	cases := []struct {
		name    string
		publish func(r *repo)
		repoURL func(r *repo) string
		args    []string
		stderr  string
	}{
		{
			name: "unknown package",
			args: []string{"add", "nosuch"}, stderr: "unable to select packages",
		},
		{
			name: "untrusted signer",
			publish: func(r *repo) {
				r.publish(apktest.BuildRepository(t, apktest.GenerateKey(t), "x86_64", hello("1.0-r0"), libhello))
			},
			args: []string{"update"}, stderr: "UNTRUSTED signature",
		},
		{
			name: "tampered index",
			publish: func(r *repo) {
				f := maps.Clone(files)
				f["x86_64/APKINDEX.tar.gz"] = apktest.Tamper(f["x86_64/APKINDEX.tar.gz"])
				r.publish(f)
			},
			args: []string{"update"}, stderr: "BAD signature",
		},
		{
			name:    "missing repository",
			repoURL: func(r *repo) string { return r.url + "/nowhere" },
			args:    []string{"update"}, stderr: "HTTP 404",
		},
		{
			name: "package not matching the index",
			publish: func(r *repo) {
				other := apktest.BuildRepository(t, key, "x86_64", hello("1.0-r0", apktest.File{Path: "evil", Data: []byte("x")}), libhello)
				f := maps.Clone(files)
				f["x86_64/hello-1.0-r0.apk"] = other["x86_64/hello-1.0-r0.apk"]
				r.publish(f)
			},
			args: []string{"add", "hello"}, stderr: "BAD signature",
		},
		{
			name: "package download fails",
			publish: func(r *repo) {
				f := maps.Clone(files)
				delete(f, "noarch/libhello-1.0-r0.apk")
				r.publish(f)
			},
			args: []string{"add", "hello"}, stderr: "ERROR: libhello-1.0-r0: package mentioned in index not found (try 'apk update')",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRepo(t)
			r.publish(files)
			if tc.publish != nil {
				tc.publish(r)
			}
			u := r.url
			if tc.repoURL != nil {
				u = tc.repoURL(r)
			}
			root := newRoot(t, u, key)
			res := run(t, root, tc.args...)
			if res.code == 0 {
				t.Fatalf("apk %v succeeded", tc.args)
			}
			if !strings.Contains(res.stderr, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, res.stderr)
			}
			// Nothing was installed.
			if _, err := os.Lstat(filepath.Join(root, "usr")); !os.IsNotExist(err) {
				t.Errorf("usr exists after failure: %v", err)
			}
		})
	}
}

func TestDelRefusesNeededPackage(t *testing.T) {
	key := apktest.NewKey(t)
	r := newRepo(t)
	r.publish(apktest.BuildRepository(t, key, "x86_64", hello("1.0-r0"), libhello))
	root := newRoot(t, r.url, key)
	mustApk(t, root, "add", "hello")
	res := run(t, root, "del", "libhello")
	if res.code == 0 || !strings.Contains(res.stderr, "still required by hello-1.0-r0") {
		t.Fatalf("del libhello: %+v", res)
	}
	if got := read(t, root, "usr/lib/libhello.txt"); got != "lib\n" {
		t.Errorf("libhello.txt = %q", got)
	}
}
