package apkcli

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/apktest"
)

// The tests below check the apk-tools 2.14 rules that decide an outcome
// (apk-protocol.md §5, §7.2, §7.5, §7.7): each against a real HTTP server,
// asserting what a user of apk would see.

// cacheFiles returns the root's cached indexes.
func cacheFiles(t *testing.T, root string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(root, "var/cache/apk/APKINDEX.*.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ageCache makes the cached index look fetched d ago.
func ageCache(t *testing.T, root string, d time.Duration) time.Time {
	t.Helper()
	files := cacheFiles(t, root)
	if len(files) != 1 {
		t.Fatalf("cached indexes: %v", files)
	}
	at := time.Now().Add(-d).Truncate(time.Second)
	if err := os.Chtimes(files[0], at, at); err != nil {
		t.Fatal(err)
	}
	return at
}

func cacheMtime(t *testing.T, root string) time.Time {
	t.Helper()
	fi, err := os.Stat(cacheFiles(t, root)[0])
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime()
}

// installedVersion is V: of the P:name stanza of the installed database,
// "" if there is none.
func installedVersion(t *testing.T, root, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "lib/apk/db/installed"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, para := range strings.Split(string(b), "\n\n") {
		if v, ok := strings.CutPrefix(para, "P:"+name+"\nV:"); ok {
			v, _, _ = strings.Cut(v, "\n")
			return v
		}
	}
	return ""
}

// fetched reports whether out has apk's fetch line for the index of r.
func fetched(r *repo, out string) bool {
	return strings.Contains(out, "fetch "+r.url+"/x86_64/APKINDEX.tar.gz\n")
}

// twoVersions is a repository at hello 1.0-r1 and a client with it
// installed, then the repository moved to version v.
func twoVersions(t *testing.T, v string) (key apktest.Key, r *repo, root string) {
	key = apktest.NewKey(t)
	r = newRepo(t)
	r.publish(apktest.BuildRepository(t, key, "x86_64", hello("1.0-r1"), libhello))
	root = newRoot(t, r.url, key)
	mustApk(t, root, "add", "hello")
	r.publish(apktest.BuildRepository(t, key, "x86_64", hello(v), libhello))
	r.indexRequests()
	return key, r, root
}

// apk-tools 2.14.10's plain `apk update` honours the 4 h cache: within
// it, nothing is fetched and a following `add -u` keeps the old version.
func TestPlainUpdateWithinFourHoursFetchesNothing(t *testing.T) {
	_, r, root := twoVersions(t, "1.1-r0")
	ageCache(t, root, 3*time.Hour+59*time.Minute)
	if out := mustApk(t, root, "update"); fetched(r, out) || !strings.Contains(out, "OK: 2 distinct packages available") {
		t.Errorf("update within 4 h:\n%s", out)
	}
	if out := mustApk(t, root, "add", "-u", "hello"); fetched(r, out) || strings.Contains(out, "Upgrading") {
		t.Errorf("add -u within 4 h:\n%s", out)
	}
	if got := installedVersion(t, root, "hello"); got != "1.0-r1" {
		t.Errorf("installed hello %s, want the old 1.0-r1", got)
	}
	if q := r.indexRequests(); len(q) != 0 {
		t.Errorf("%d index requests within 4 h", len(q))
	}

	// Past 4 h, update fetches (conditionally) and add -u upgrades.
	ageCache(t, root, 4*time.Hour+time.Minute)
	if out := mustApk(t, root, "update"); !fetched(r, out) {
		t.Errorf("update after 4 h:\n%s", out)
	}
	if out := mustApk(t, root, "add", "-u", "hello"); !strings.Contains(out, "(1/1) Upgrading hello (1.0-r1 -> 1.1-r0)") {
		t.Errorf("add -u after the update:\n%s", out)
	}
	if got := installedVersion(t, root, "hello"); got != "1.1-r0" {
		t.Errorf("installed hello %s, want 1.1-r0", got)
	}
}

// -U sets the cache max age to one minute (apk-tools 2.x src/apk.c).
func TestUpdateCacheIsOneMinute(t *testing.T) {
	_, r, root := twoVersions(t, "1.1-r0")
	ageCache(t, root, 50*time.Second)
	if out := mustApk(t, root, "-U", "add", "-u", "hello"); fetched(r, out) || installedVersion(t, root, "hello") != "1.0-r1" {
		t.Errorf("apk -U add -u 50 s after a fetch fetched or upgraded:\n%s", out)
	}
	ageCache(t, root, 61*time.Second)
	out := mustApk(t, root, "-U", "add", "-u", "hello")
	if !fetched(r, out) || !strings.Contains(out, "(1/1) Upgrading hello (1.0-r1 -> 1.1-r0)") {
		t.Errorf("apk -U add -u 61 s after a fetch:\n%s", out)
	}
	q := r.indexRequests()
	if len(q) != 1 || q[0].header.Get("If-Modified-Since") != "" || q[0].header.Get("Cache-Control") != "" {
		t.Errorf("index requests %+v, want one without If-Modified-Since or Cache-Control", q)
	}
	// --update-cache is -U, and so is -U bundled with other flags.
	for _, args := range [][]string{{"--update-cache", "update"}, {"-Uv", "update"}} {
		ageCache(t, root, 50*time.Second)
		if out := mustApk(t, root, args...); fetched(r, out) {
			t.Errorf("apk %v 50 s after a fetch fetched:\n%s", args, out)
		}
		ageCache(t, root, 61*time.Second)
		if out := mustApk(t, root, args...); !fetched(r, out) {
			t.Errorf("apk %v 61 s after a fetch did not fetch:\n%s", args, out)
		}
	}
}

func TestForceRefreshAlwaysFetches(t *testing.T) {
	_, r, root := twoVersions(t, "1.1-r0")
	out := mustApk(t, root, "--force-refresh", "update")
	if !fetched(r, out) {
		t.Errorf("--force-refresh update right after a fetch:\n%s", out)
	}
	q := r.indexRequests()
	if len(q) != 1 || q[0].header.Get("Cache-Control") != "no-cache" || q[0].header.Get("If-Modified-Since") != "" {
		t.Fatalf("index requests %+v, want one with Cache-Control: no-cache and no If-Modified-Since", q)
	}
	// The refreshed index is the cached one now.
	if out := mustApk(t, root, "add", "-u", "hello"); fetched(r, out) || !strings.Contains(out, "(1/1) Upgrading hello (1.0-r1 -> 1.1-r0)") {
		t.Errorf("add -u after --force-refresh update:\n%s", out)
	}
	if out := mustApk(t, root, "--force-refresh", "add", "-u", "hello"); !fetched(r, out) || strings.Contains(out, "grading") {
		t.Errorf("--force-refresh add -u:\n%s", out)
	}
	if out := mustApk(t, root, "--version"); out != "apk-tools 2.14.10, compiled for x86_64.\n" {
		t.Errorf("--version = %q", out)
	}
}

// If-Modified-Since carries the cache file's mtime, and only for a cache
// older than the max age; a 304 keeps and touches the cache (§7.2).
func TestIfModifiedSince(t *testing.T) {
	_, r, root := twoVersions(t, "1.1-r0")
	at := ageCache(t, root, 5*time.Hour)
	r.setModTime(at.Add(-time.Hour)) // the server's index is older than the client's copy
	out := mustApk(t, root, "add", "-u", "hello")
	q := r.indexRequests()
	if len(q) != 1 || q[0].header.Get("If-Modified-Since") != at.UTC().Format(http.TimeFormat) {
		t.Fatalf("index requests %+v, want one with If-Modified-Since: %s", q, at.UTC().Format(http.TimeFormat))
	}
	if strings.Contains(out, "Upgrading") || installedVersion(t, root, "hello") != "1.0-r1" {
		t.Errorf("after a 304 the cached index was not the one used:\n%s", out)
	}
	if age := time.Since(cacheMtime(t, root)); age > time.Minute {
		t.Errorf("after a 304 the cache is %v old, want touched", age)
	}
	// Now fresh: no request at all.
	mustApk(t, root, "add", "-u", "hello")
	if q := r.indexRequests(); len(q) != 0 {
		t.Errorf("a fresh cache was requested again: %+v", q)
	}
	// A newer server index answers 200 to the same conditional request.
	at = ageCache(t, root, 5*time.Hour)
	r.setModTime(time.Now())
	if out := mustApk(t, root, "add", "-u", "hello"); !strings.Contains(out, "Upgrading hello (1.0-r1 -> 1.1-r0)") {
		t.Errorf("add -u after a 200:\n%s", out)
	}
	if q := r.indexRequests(); len(q) != 1 || q[0].header.Get("If-Modified-Since") != at.UTC().Format(http.TimeFormat) {
		t.Errorf("index requests %+v", q)
	}
	// --cache-max-age is in minutes.
	ageCache(t, root, 9*time.Minute)
	mustApk(t, root, "--cache-max-age", "10", "update")
	ageCache(t, root, 11*time.Minute)
	mustApk(t, root, "--cache-max-age=10", "update")
	if q := r.indexRequests(); len(q) != 1 {
		t.Errorf("--cache-max-age 10: %d index requests, want 1 (at 11 minutes)", len(q))
	}
}

// `add -u` never downgrades (§7.7).
func TestAddUpgradeNeverDowngrades(t *testing.T) {
	_, r, root := twoVersions(t, "1.0-r0")
	out := mustApk(t, root, "--force-refresh", "add", "-u", "hello")
	if strings.Contains(out, "grading") || !strings.Contains(out, "OK: ") {
		t.Errorf("add -u with an older index:\n%s", out)
	}
	if got := installedVersion(t, root, "hello"); got != "1.0-r1" {
		t.Errorf("installed hello %s, want 1.0-r1 kept", got)
	}
	if got := read(t, root, "usr/share/hello/VERSION"); got != "1.0-r1\n" {
		t.Errorf("VERSION = %q", got)
	}
	if q := r.indexRequests(); len(q) != 1 {
		t.Errorf("%d index requests, want 1", len(q))
	}
}

// hello=<version> installs exactly that version and pins it in the world
// (§7.7).
func TestVersionPins(t *testing.T) {
	key := apktest.NewKey(t)
	r := newRepo(t)
	r.publish(apktest.BuildRepository(t, key, "x86_64", hello("1.0-r1"), libhello))
	root := newRoot(t, r.url, key)
	mustApk(t, root, "add", "hello")
	// A repository offering both versions: the pin picks among them.
	var built []apktest.BuiltPackage
	files := map[string][]byte{}
	for _, p := range []apktest.Package{hello("1.0-r0"), hello("1.0-r1"), libhello} {
		b := apktest.BuildPackage(t, key, p)
		built = append(built, b)
		files[b.Path()] = b.APK
	}
	files["x86_64/APKINDEX.tar.gz"] = apktest.BuildIndex(t, key, built, "both")
	r.publish(files)
	mustApk(t, root, "--force-refresh", "update")

	out := mustApk(t, root, "add", "hello=1.0-r0")
	if !strings.Contains(out, "(1/1) Downgrading hello (1.0-r1 -> 1.0-r0)") {
		t.Errorf("add hello=1.0-r0:\n%s", out)
	}
	if got := installedVersion(t, root, "hello"); got != "1.0-r0" {
		t.Errorf("installed hello %s, want 1.0-r0", got)
	}
	if got := read(t, root, "usr/share/hello/VERSION"); got != "1.0-r0\n" {
		t.Errorf("VERSION = %q", got)
	}
	if got := read(t, root, "etc/apk/world"); got != "hello=1.0-r0\n" {
		t.Errorf("world = %q, want the pin", got)
	}
	// add -u keeps the pin; a re-add of the same pin changes nothing.
	for _, args := range [][]string{{"add", "-u", "hello"}, {"add", "--upgrade", "hello"}, {"add", "hello=1.0-r0"}} {
		if out := mustApk(t, root, args...); strings.Contains(out, "grading") {
			t.Errorf("apk %v moved the pinned version:\n%s", args, out)
		}
		if got := installedVersion(t, root, "hello"); got != "1.0-r0" {
			t.Errorf("after apk %v hello is %s, want 1.0-r0", args, got)
		}
		if got := read(t, root, "etc/apk/world"); got != "hello=1.0-r0\n" {
			t.Errorf("after apk %v world = %q", args, got)
		}
	}
	// Another version moves the pin.
	if out := mustApk(t, root, "add", "hello=1.0-r1"); !strings.Contains(out, "(1/1) Upgrading hello (1.0-r0 -> 1.0-r1)") {
		t.Errorf("add hello=1.0-r1:\n%s", out)
	}
	if got := read(t, root, "etc/apk/world"); got != "hello=1.0-r1\n" {
		t.Errorf("world = %q, want hello=1.0-r1", got)
	}
	mustApk(t, root, "add", "hello=1.0-r0")

	// An unknown version fails and changes nothing.
	res := run(t, root, "add", "hello=9.9-r0")
	if res.code == 0 || !strings.Contains(res.stderr, "unable to select packages") {
		t.Errorf("add hello=9.9-r0: %+v", res)
	}
	if got := installedVersion(t, root, "hello"); got != "1.0-r0" {
		t.Errorf("after a failed add hello is %s", got)
	}
	if got := read(t, root, "etc/apk/world"); got != "hello=1.0-r0\n" {
		t.Errorf("after a failed add world = %q", got)
	}

	// A range that the installed version satisfies keeps it, without -u.
	if out := mustApk(t, root, "add", "hello>=1.0-r0"); strings.Contains(out, "grading") {
		t.Errorf("add hello>=1.0-r0 changed the version:\n%s", out)
	}
	if got := read(t, root, "etc/apk/world"); got != "hello>=1.0-r0\n" {
		t.Errorf("world = %q, want hello>=1.0-r0", got)
	}

	// A bare name drops the pin but keeps the version; add -u then upgrades.
	if out := mustApk(t, root, "add", "hello"); strings.Contains(out, "grading") {
		t.Errorf("add hello changed the version:\n%s", out)
	}
	if got := read(t, root, "etc/apk/world"); got != "hello\n" {
		t.Errorf("world = %q, want the pin dropped", got)
	}
	if out := mustApk(t, root, "add", "-u", "hello"); !strings.Contains(out, "(1/1) Upgrading hello (1.0-r0 -> 1.0-r1)") {
		t.Errorf("add -u after dropping the pin:\n%s", out)
	}
}

func TestIndexSignatures(t *testing.T) {
	key, other := apktest.NewKey(t), apktest.GenerateKey(t)
	abuild := apktest.GenerateKey(t)
	abuild.Name = "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"

	cases := []struct {
		name    string
		trusted []apktest.Key // written to /etc/apk/keys under their Name
		signers []apktest.Signer
		stderr  string // "" for success
	}{
		{name: "RSA256", trusted: []apktest.Key{key}, signers: []apktest.Signer{{Key: key, Algorithm: "RSA256"}}},
		{name: "RSA512", trusted: []apktest.Key{key}, signers: []apktest.Signer{{Key: key, Algorithm: "RSA512"}}},
		{name: "abuild key name with @", trusted: []apktest.Key{abuild}, signers: []apktest.Signer{{Key: abuild, Algorithm: "RSA"}}},
		{name: "first signature with a key file is used", trusted: []apktest.Key{key},
			signers: []apktest.Signer{{Key: other, Algorithm: "RSA"}, {Key: key, Algorithm: "RSA256"}}},
		{name: "first signature with a key file decides, even if it fails", trusted: []apktest.Key{{Private: key.Private, Name: other.Name}, key},
			signers: []apktest.Signer{{Key: other, Algorithm: "RSA"}, {Key: key, Algorithm: "RSA"}}, stderr: "BAD signature by " + other.Name},
		{name: "key under another file name", trusted: []apktest.Key{{Private: key.Private, Name: "renamed.rsa.pub"}},
			signers: []apktest.Signer{{Key: key, Algorithm: "RSA"}}, stderr: "UNTRUSTED signature"},
		{name: "other key under the signature's name", trusted: []apktest.Key{{Private: other.Private, Name: key.Name}},
			signers: []apktest.Signer{{Key: key, Algorithm: "RSA256"}}, stderr: "BAD signature"},
		{name: "unsigned", trusted: []apktest.Key{key}, stderr: "UNTRUSTED signature"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files := apktest.BuildRepository(t, key, "x86_64", hello("1.0-r0"), libhello)
			files["x86_64/APKINDEX.tar.gz"] = apktest.SignIndex(t, files["x86_64/APKINDEX.tar.gz"], tc.signers...)
			r := newRepo(t)
			r.publish(files)
			root := newRoot(t, r.url, tc.trusted[0])
			for _, k := range tc.trusted[1:] {
				write(t, root, "etc/apk/keys/"+k.Name, k.PublicPEM())
			}
			if entries, _ := os.ReadDir(filepath.Join(root, "etc/apk/keys")); len(entries) != len(tc.trusted) {
				t.Fatalf("keys: %v", entries)
			}
			res := run(t, root, "add", "hello")
			if tc.stderr == "" {
				if res.code != 0 || installedVersion(t, root, "hello") != "1.0-r0" {
					t.Fatalf("add hello: %+v", res)
				}
				return
			}
			if res.code == 0 || !strings.Contains(res.stderr, tc.stderr) {
				t.Fatalf("add hello: exit %d, stderr lacks %q:\n%s", res.code, tc.stderr, res.stderr)
			}
			if installedVersion(t, root, "hello") != "" || len(cacheFiles(t, root)) != 0 {
				t.Errorf("an untrusted index was installed from or cached")
			}
		})
	}
}

// A new index that fails its signature check is discarded: the cached
// one stays and is used, the repository counting as stale (§7.5).
func TestBadIndexKeepsCache(t *testing.T) {
	key, r, root := twoVersions(t, "1.1-r0")
	cached := read(t, root, strings.TrimPrefix(cacheFiles(t, root)[0], root))
	bad := apktest.BuildRepository(t, key, "x86_64", hello("1.1-r0"), libhello)
	bad["x86_64/APKINDEX.tar.gz"] = apktest.Tamper(bad["x86_64/APKINDEX.tar.gz"])
	r.publish(bad)

	res := run(t, root, "--force-refresh", "update")
	if res.code == 0 || !strings.Contains(res.stderr, "BAD signature") || !strings.Contains(res.stdout, "0 unavailable, 1 stale") {
		t.Errorf("update with a tampered index: %+v", res)
	}
	if got := read(t, root, strings.TrimPrefix(cacheFiles(t, root)[0], root)); got != cached {
		t.Errorf("the cached index was replaced by a tampered one")
	}
	// add goes on with the cached index, as apk does.
	res = run(t, root, "--force-refresh", "add", "-u", "hello")
	if res.code != 0 || strings.Contains(res.stdout, "Upgrading") || !strings.Contains(res.stderr, "BAD signature") {
		t.Errorf("add -u with a tampered index: %+v", res)
	}
	// Another signer's index is refused the same way.
	r.publish(apktest.BuildRepository(t, apktest.GenerateKey(t), "x86_64", hello("1.1-r0"), libhello))
	res = run(t, root, "--force-refresh", "add", "hello=1.1-r0")
	if res.code == 0 || !strings.Contains(res.stderr, "UNTRUSTED signature") || !strings.Contains(res.stderr, "unable to select packages") {
		t.Errorf("add hello=1.1-r0 from an untrusted index: %+v", res)
	}
	if got := installedVersion(t, root, "hello"); got != "1.0-r1" {
		t.Errorf("installed hello %s, want 1.0-r1", got)
	}
}
