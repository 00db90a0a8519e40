package incusimage

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	p := Build(t, dir)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	entries := map[string]*tar.Header{}
	contents := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := entries[h.Name]; dup {
			t.Errorf("duplicate entry %s", h.Name)
		}
		entries[h.Name] = h
		if h.Typeflag == tar.TypeReg && h.Size < 1<<20 {
			contents[h.Name], _ = io.ReadAll(tr)
		} else if h.Name == "rootfs/sbin/apk" {
			b, _ := io.ReadAll(tr)
			os.WriteFile(filepath.Join(dir, "apk"), b, 0o755)
		}
	}
	for name, typ := range map[string]byte{
		"metadata.yaml": tar.TypeReg, "rootfs/bin/busybox": tar.TypeReg, "rootfs/bin/sh": tar.TypeSymlink,
		"rootfs/sbin/init": tar.TypeSymlink, "rootfs/sbin/apk": tar.TypeReg, "rootfs/etc/apk/keys/": tar.TypeDir,
		"rootfs/lib/apk/db/installed": tar.TypeReg, "rootfs/tmp/": tar.TypeDir, "templates/hostname.tpl": tar.TypeReg,
	} {
		h, ok := entries[name]
		if !ok || h.Typeflag != typ {
			t.Errorf("entry %s: %+v", name, h)
		}
	}
	if m := string(contents["metadata.yaml"]); !strings.Contains(m, "architecture: x86_64") || !strings.Contains(m, `release: "3.20"`) {
		t.Errorf("metadata.yaml:\n%s", m)
	}
	if !strings.Contains(string(contents["rootfs/etc/os-release"]), "ID=alpine") {
		t.Errorf("os-release: %s", contents["rootfs/etc/os-release"])
	}
	// The apk client in the image is static and runs.
	out, err := exec.Command(filepath.Join(dir, "apk"), "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "apk-tools") {
		t.Errorf("apk --version: %v: %s", err, out)
	}
	// A second Build reuses the same tarball.
	b1, _ := os.ReadFile(p)
	b2, _ := os.ReadFile(Build(t, t.TempDir()))
	if string(b1) != string(b2) {
		t.Error("second Build differs")
	}
}
