package apktest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"encoding/hex"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/chainguard-dev/go-apk/pkg/apk"

	"github.com/uplinkhq/uplink/internal/apkfile"
)

const prefix = "/distribution/main/org/app"

func hello(version string) Package {
	return Package{
		Name: "hello", Version: version, Description: "Hello world",
		Depends: []string{"libhello"},
		Files: []File{
			{Path: "usr/share/hello/VERSION", Data: []byte(version + "\n")},
			{Path: "/usr/bin/hello", Mode: 0o755, Data: []byte("#!/bin/sh\necho hello\n")},
			{Path: "usr/bin/hi", Mode: fs.ModeSymlink, Data: []byte("hello")},
		},
	}
}

var libhello = Package{
	Name: "libhello", Version: "1.0-r0", Arch: "noarch", Description: "Hello library",
	Files: []File{{Path: "usr/lib/libhello.txt", Data: []byte("lib\n")}},
}

// serve serves dir below prefix with http.FileServer and records request paths.
func serve(t *testing.T, dir string) (repoURL string, requests func() []string) {
	t.Helper()
	var mu sync.Mutex
	var paths []string
	fileServer := http.StripPrefix(prefix, http.FileServer(http.Dir(dir)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, strings.TrimPrefix(r.URL.Path, prefix))
		mu.Unlock()
		fileServer.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + prefix, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(paths)
	}
}

func readFile(t *testing.T, root, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestInstall(t *testing.T) {
	key := NewKey(t)
	files := BuildRepository(t, key, "x86_64", hello("1.0-r0"), libhello)
	for _, p := range []string{"x86_64/APKINDEX.tar.gz", "x86_64/hello-1.0-r0.apk", "noarch/libhello-1.0-r0.apk"} {
		if files[p] == nil {
			t.Fatalf("BuildRepository: no %s in %v", p, slices.Sorted(maps.Keys(files)))
		}
	}
	dir := t.TempDir()
	WriteDir(t, dir, files)
	repoURL, requests := serve(t, dir)

	root, err := Install(t, t.Context(), repoURL, key, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, root, "usr/share/hello/VERSION"); got != "1.0-r0\n" {
		t.Errorf("VERSION = %q", got)
	}
	if got := readFile(t, root, "usr/lib/libhello.txt"); got != "lib\n" {
		t.Errorf("dependency file = %q", got)
	}
	if fi, err := os.Stat(filepath.Join(root, "usr/bin/hello")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("usr/bin/hello: %v, %v", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(root, "usr/bin/hi")); err != nil || target != "hello" {
		t.Errorf("usr/bin/hi -> %q, %v", target, err)
	}
	if got := readFile(t, root, "etc/apk/keys/"+key.Name); got != string(key.PublicPEM()) {
		t.Errorf("trusted key file = %q", got)
	}
	if got := readFile(t, root, "etc/apk/repositories"); got != repoURL+"\n" {
		t.Errorf("repositories = %q", got)
	}
	db := readFile(t, root, "lib/apk/db/installed")
	for _, want := range []string{"P:hello\n", "P:libhello\n"} {
		if !strings.Contains(db, want) {
			t.Errorf("installed db lacks %q:\n%s", want, db)
		}
	}
	// The noarch package is fetched below its A:, as apk-tools does.
	want := []string{"/x86_64/APKINDEX.tar.gz", "/noarch/libhello-1.0-r0.apk", "/x86_64/hello-1.0-r0.apk"}
	got := requests()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("requests = %q, want %q", got, want)
	}

	// A second Install fetches the index again instead of reusing go-apk's cache.
	if _, err := Install(t, t.Context(), repoURL, key, "libhello"); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.Join(requests(), " "), "APKINDEX"); n != 2 {
		t.Errorf("index fetched %d times, want 2", n)
	}
}

// TestBasicAuth: credentials in the repository URL reach the server on the
// index and package requests, as with apk's user:pass@ URLs.
func TestBasicAuth(t *testing.T) {
	key := NewKey(t)
	dir := t.TempDir()
	WriteDir(t, dir, BuildRepository(t, key, "x86_64", libhello))
	files := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "ci" || p != "s3cret" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	if _, err := Install(t, t.Context(), srv.URL, key, "libhello"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("Install without credentials: %v, want 401", err)
	}
	authURL := strings.Replace(srv.URL, "http://", "http://ci:s3cret@", 1)
	root, err := Install(t, t.Context(), authURL, key, "libhello")
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, root, "usr/lib/libhello.txt"); got != "lib\n" {
		t.Errorf("libhello.txt = %q", got)
	}
}

func TestRefusals(t *testing.T) {
	key := NewKey(t)
	other := GenerateKey(t)
	impostor := other
	impostor.Name = key.Name // right name, wrong key
	renamed := key
	renamed.Name = "someone-else-00000000.rsa.pub" // right key, wrong name

	tests := []struct {
		name    string
		files   map[string][]byte
		wantErr string
	}{
		{"tampered index", tamperIndex(BuildRepository(t, key, "x86_64", hello("1.0-r0"), libhello)), "signature"},
		{"other key", BuildRepository(t, other, "x86_64", hello("1.0-r0"), libhello), "signature"},
		{"other key, trusted name", BuildRepository(t, impostor, "x86_64", hello("1.0-r0"), libhello), "signature"},
		{"trusted key, other name", BuildRepository(t, renamed, "x86_64", hello("1.0-r0"), libhello), "UNTRUSTED signature"},
		{"missing package", without(BuildRepository(t, key, "x86_64", hello("1.0-r0"), libhello), "noarch/libhello-1.0-r0.apk"), "404"},
		{"unknown package", BuildRepository(t, key, "x86_64", libhello), "hello"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			WriteDir(t, dir, tc.files)
			repoURL, _ := serve(t, dir)
			root, err := Install(t, t.Context(), repoURL, key, "hello")
			if err == nil {
				t.Fatalf("Install succeeded (root %s), want error", root)
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}

func tamperIndex(files map[string][]byte) map[string][]byte {
	idx := files["x86_64/APKINDEX.tar.gz"]
	bad := Tamper(idx)
	if bytes.Equal(idx, bad) {
		panic("Tamper changed nothing")
	}
	// Still a readable archive: only the signature can reject it.
	if _, err := apk.IndexFromArchive(io.NopCloser(bytes.NewReader(bad))); err != nil {
		panic(err)
	}
	files["x86_64/APKINDEX.tar.gz"] = bad
	return files
}

func without(files map[string][]byte, name string) map[string][]byte {
	delete(files, name)
	return files
}

// TestTwoPhase fetches the index before a branch move and packages after it.
func TestTwoPhase(t *testing.T) {
	key := NewKey(t)
	dir := t.TempDir()
	WriteDir(t, dir, BuildRepository(t, key, "x86_64", hello("1.0-r0"), libhello))
	repoURL, _ := serve(t, dir)
	ctx := t.Context()

	old, err := FetchIndex(ctx, repoURL, key, "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if old.Description != "apktest repository x86_64" || len(old.Packages) != 2 {
		t.Fatalf("index: %q, %d packages", old.Description, len(old.Packages))
	}

	// The branch moves to 2.0-r0; 1.0-r0 stays downloadable.
	WriteDir(t, dir, BuildRepository(t, key, "x86_64", hello("2.0-r0"), libhello))
	root, err := old.Install(t, ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, root, "usr/share/hello/VERSION"); got != "1.0-r0\n" {
		t.Errorf("old index installed VERSION %q", got)
	}
	root, err = Install(t, ctx, repoURL, key, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, root, "usr/share/hello/VERSION"); got != "2.0-r0\n" {
		t.Errorf("fresh index installed VERSION %q", got)
	}

	// Rebuilding a published version changes its control member: refused.
	rebuilt := hello("1.0-r0")
	rebuilt.Description = "rebuilt"
	WriteDir(t, dir, map[string][]byte{"x86_64/hello-1.0-r0.apk": BuildPackage(t, key, rebuilt).APK})
	if _, err := old.FetchPackage(ctx, "hello"); err == nil || !strings.Contains(err.Error(), "BAD signature") {
		t.Errorf("FetchPackage of rebuilt package: %v, want BAD signature", err)
	}
	_, err = old.Install(t, ctx, "hello")
	t.Logf("rebuilt: %v", err)
	if err == nil || !strings.Contains(err.Error(), "BAD signature") {
		t.Errorf("Install of rebuilt package: %v, want BAD signature", err)
	}

	// Removing it gives the apk "try 'apk update'" situation.
	if err := os.Remove(filepath.Join(dir, "x86_64/hello-1.0-r0.apk")); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Install(t, ctx, "hello"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Install of removed package: %v, want 404", err)
	}
}

func TestFetchPackage(t *testing.T) {
	key := NewKey(t)
	dir := t.TempDir()
	files := BuildRepository(t, key, "x86_64", hello("1.0-r0"), libhello)
	WriteDir(t, dir, files)
	repoURL, _ := serve(t, dir)
	ix, err := FetchIndex(t.Context(), repoURL, key, "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ix.FetchPackage(t.Context(), "libhello")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, files["noarch/libhello-1.0-r0.apk"]) {
		t.Error("FetchPackage returned different bytes")
	}
}

// TestFormat checks the built bytes against go-apk's parsers and the
// structure rules of apk-protocol.md.
func TestFormat(t *testing.T) {
	key := NewKey(t)
	b := BuildPackage(t, key, hello("1.0-r0"))
	lib := BuildPackage(t, key, libhello)

	// Deterministic apart from the signature member.
	again := BuildPackage(t, key, hello("1.0-r0"))
	members, err := apkfile.Members(b.APK)
	if err != nil || len(members) != 3 {
		t.Fatalf("package: %d members, %v", len(members), err)
	}
	if !bytes.Equal(b.APK[len(members[0]):], again.APK[len(again.APK)-len(b.APK)+len(members[0]):]) {
		t.Error("control and data members differ between identical builds")
	}

	// Signature: cut tar, RSA SHA-1 over the control member.
	sig := gunzip(t, members[0])
	if len(sig) != 1024 {
		t.Errorf("signature tar is %d bytes, want 1024 (header + 256-byte signature, cut)", len(sig))
	}
	hdr, sigBytes := firstTarEntry(t, sig)
	if hdr.Name != ".SIGN.RSA."+key.Name {
		t.Errorf("signature entry %q", hdr.Name)
	}
	digest := sha1.Sum(members[1])
	if err := rsa.VerifyPKCS1v15(&key.Private.PublicKey, crypto.SHA1, digest[:], sigBytes); err != nil {
		t.Errorf("package signature: %v", err)
	}
	if ctl := gunzip(t, members[1]); len(ctl)%512 != 0 || bytes.HasSuffix(ctl, make([]byte, 1024)) {
		t.Errorf("control tar not cut: %d bytes", len(ctl))
	}
	data := gunzip(t, members[2])
	if !bytes.HasSuffix(data, make([]byte, 1024)) {
		t.Error("data tar lacks end-of-archive blocks")
	}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			content, _ := io.ReadAll(tr)
			sum := sha1.Sum(content)
			if got := h.PAXRecords["APK-TOOLS.checksum.SHA1"]; got != hex.EncodeToString(sum[:]) {
				t.Errorf("%s: checksum record %q", h.Name, got)
			}
		}
	}

	// go-apk's package parser agrees on C:, size and datahash.
	parsed, err := apk.ParsePackage(t.Context(), bytes.NewReader(b.APK))
	if err != nil {
		t.Fatal(err)
	}
	if parsed.ChecksumString() != b.Checksum() || parsed.Size != uint64(len(b.APK)) ||
		parsed.DataHash != hex.EncodeToString(b.DataHash[:]) || parsed.InstalledSize != uint64(b.InstalledSize) {
		t.Errorf("ParsePackage = %+v, built C:%s S:%d", parsed, b.Checksum(), len(b.APK))
	}

	// Index: signature over the whole index member; text parsed by go-apk.
	idx := BuildIndex(t, key, []BuiltPackage{b, lib}, "test repo")
	imembers, err := apkfile.Members(idx)
	if err != nil || len(imembers) != 2 {
		t.Fatalf("index: %d members, %v", len(imembers), err)
	}
	_, isig := firstTarEntry(t, gunzip(t, imembers[0]))
	digest = sha1.Sum(imembers[1])
	if err := rsa.VerifyPKCS1v15(&key.Private.PublicKey, crypto.SHA1, digest[:], isig); err != nil {
		t.Errorf("index signature: %v", err)
	}
	itr := tar.NewReader(bytes.NewReader(gunzip(t, imembers[1])))
	var names []string
	var text string
	for {
		h, err := itr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == "APKINDEX" {
			raw, _ := io.ReadAll(itr)
			text = string(raw)
		}
	}
	if !slices.Equal(names, []string{"DESCRIPTION", "APKINDEX"}) {
		t.Errorf("index entries %q", names)
	}
	wantEntry := "C:" + b.Checksum() + "\nP:hello\nV:1.0-r0\nA:x86_64\n"
	if !strings.HasPrefix(text, wantEntry) || !strings.HasSuffix(text, "\n\n") || strings.Count(text, "\n\n") != 2 {
		t.Errorf("APKINDEX text:\n%s", text)
	}
	pkgs, err := apk.ParsePackageIndex(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 2 {
		t.Fatalf("ParsePackageIndex: %d packages", len(pkgs))
	}
	for i, want := range []BuiltPackage{b, lib} {
		p := pkgs[i]
		if p.Name != want.Name || p.Version != want.Version || p.Arch != want.Arch ||
			p.Description != want.Description || p.Size != uint64(len(want.APK)) ||
			p.InstalledSize != uint64(want.InstalledSize) || p.ChecksumString() != want.Checksum() ||
			!slices.Equal(p.Dependencies, want.Depends) {
			t.Errorf("index entry %d = %+v, want %+v", i, p, want.Package)
		}
	}
}

func gunzip(t *testing.T, member []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(member))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func firstTarEntry(t *testing.T, b []byte) (*tar.Header, []byte) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	return h, data
}

// TestRedirects: like libfetch, follow 301/302/303 but fail on 307/308.
func TestRedirects(t *testing.T) {
	key := NewKey(t)
	dir := t.TempDir()
	WriteDir(t, dir, BuildRepository(t, key, "x86_64", libhello))
	files := http.StripPrefix("/real", http.FileServer(http.Dir(dir)))
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/real/") {
				files.ServeHTTP(w, r)
				return
			}
			http.Redirect(w, r, "/real"+r.URL.Path, code)
		}))
		_, err := Install(t, t.Context(), srv.URL, key, "libhello")
		srv.Close()
		if code == http.StatusFound && err != nil {
			t.Errorf("302: %v", err)
		}
		if code == http.StatusTemporaryRedirect && (err == nil || !strings.Contains(err.Error(), "307")) {
			t.Errorf("307: %v, want refusal", err)
		}
	}
}
