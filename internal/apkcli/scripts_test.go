package apkcli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/uplinkhq/uplink/internal/apkfile"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/incusimage"
)

// withScripts rebuilds a package built by apktest with package scripts
// (".post-install" etc.) added to its control member, re-signed.
func withScripts(t *testing.T, key apktest.Key, p apktest.Package, scripts map[string]string) apktest.BuiltPackage {
	t.Helper()
	b := apktest.BuildPackage(t, key, p)
	members, err := apkfile.Members(b.APK)
	if err != nil || len(members) != 3 {
		t.Fatalf("apktest package: %d members, %v", len(members), err)
	}
	names := []string{".PKGINFO"}
	bodies := map[string][]byte{".PKGINFO": pkginfo(t, members[1])}
	for s, body := range scripts {
		names = append(names, "."+s)
		bodies["."+s] = []byte(body)
	}
	slices.Sort(names[1:])
	control := cutTarGz(t, names, bodies, 0o755)
	sum := sha1.Sum(control)
	sig, err := rsa.SignPKCS1v15(nil, key.Private, crypto.SHA1, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sigMember := cutTarGz(t, []string{".SIGN.RSA." + key.Name}, map[string][]byte{".SIGN.RSA." + key.Name: sig}, 0o644)
	b.APK = slices.Concat(sigMember, control, members[2])
	b.ControlHash = sum
	return b
}

func pkginfo(t *testing.T, control []byte) []byte {
	zr, err := gzip.NewReader(bytes.NewReader(control))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no .PKGINFO: %v", err)
		}
		if h.Name == ".PKGINFO" {
			var buf bytes.Buffer
			buf.ReadFrom(tr)
			return buf.Bytes()
		}
	}
}

// cutTarGz is a gzip'd tar without end-of-archive blocks, as abuild
// writes signature and control members.
func cutTarGz(t *testing.T, names []string, bodies map[string][]byte, mode int64) []byte {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: mode, Size: int64(len(bodies[n])), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}); err != nil {
			t.Fatal(err)
		}
		tw.Write(bodies[n])
	}
	tw.Flush()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tb.Bytes())
	zw.Close()
	return gz.Bytes()
}

// TestScripts runs package scripts in a chroot with the image's static
// busybox as /bin/sh, as apk-tools runs them in the root.
func TestScripts(t *testing.T) {
	bb, err := incusimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	key := apktest.NewKey(t)
	logLine := func(name string) string {
		return "#!/bin/sh\necho \"" + name + " $*\" >> /var/log/scripts.log\n"
	}
	all := map[string]string{}
	for _, s := range []string{"pre-install", "post-install", "pre-upgrade", "post-upgrade", "pre-deinstall", "post-deinstall"} {
		all[s] = logLine(s)
	}
	build := func(version string, scripts map[string]string) map[string][]byte {
		p := apktest.Package{Name: "svc", Version: version, Arch: "x86_64", Files: []apktest.File{{Path: "etc/svc.conf", Data: []byte(version)}}}
		b := withScripts(t, key, p, scripts)
		return map[string][]byte{b.Path(): b.APK, "x86_64/APKINDEX.tar.gz": apktest.BuildIndex(t, key, []apktest.BuiltPackage{b}, "scripts")}
	}
	r := newRepo(t)
	root := newRoot(t, r.url, key)
	for _, d := range []string{"bin", "var/log"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	write(t, root, "bin/busybox", data)
	os.Chmod(filepath.Join(root, "bin/busybox"), 0o755)
	os.Symlink("busybox", filepath.Join(root, "bin/sh"))

	r.publish(build("1.0-r0", all))
	out := mustApk(t, root, "add", "svc")
	if !strings.Contains(out, "Executing svc-1.0-r0.post-install") {
		t.Errorf("add output:\n%s", out)
	}
	r.publish(build("1.1-r0", all))
	mustApk(t, root, "--force-refresh", "add", "-u", "svc")
	mustApk(t, root, "del", "svc")
	want := "pre-install 1.0-r0\npost-install 1.0-r0\npre-upgrade 1.1-r0 1.0-r0\npost-upgrade 1.1-r0 1.0-r0\npre-deinstall 1.1-r0\npost-deinstall 1.1-r0\n"
	if got := read(t, root, "var/log/scripts.log"); got != want {
		t.Errorf("scripts ran:\n%s\nwant:\n%s", got, want)
	}
	if b, _ := os.ReadFile(filepath.Join(root, scriptsPath)); bytes.Contains(b, []byte("svc-")) {
		t.Errorf("scripts.tar still has svc's scripts")
	}

	// A failing script is reported and fails the command; the package
	// stays installed, as with apk-tools.
	r.publish(build("2.0-r0", map[string]string{"post-install": "#!/bin/sh\necho broken >&2\nexit 3\n"}))
	res := run(t, root, "--force-refresh", "add", "svc")
	if res.code == 0 || !strings.Contains(res.stderr, "svc-2.0-r0.post-install: script exited with error 3") {
		t.Errorf("failing post-install: %+v", res)
	}
	if got := read(t, root, "etc/svc.conf"); got != "2.0-r0" {
		t.Errorf("svc.conf = %q", got)
	}
}
