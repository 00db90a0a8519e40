// Package incusimage builds the container image that tests import into a
// real Incus or LXD daemon: a "unified" image tarball (metadata.yaml plus
// rootfs/) of Debian's static busybox dressed up as Alpine 3.20, whose
// /sbin/apk is a real APK client (internal/apkcli, built static with the
// local Go toolchain). No network is needed to build it.
//
// busybox comes from Debian's busybox-static package, which
// scripts/install-test-deps.sh unpacks into $UPLINK_TEST_ROOT/busybox
// (default /opt/uplink-test/busybox).
package incusimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Alias is the alias tests import the image under, the one uplink uses
// for Alpine 3.20 instances.
const Alias = "alpine/3.20"

// BootedFile exists in a container of the image once init has run its
// sysinit actions (/run mounted, loopback up).
const BootedFile = "/run/booted"

// FileName is the name of the tarball Build writes.
const FileName = "uplink-test-image.tar.gz"

// APKPackage is the import path of the apk client's main package.
const APKPackage = "github.com/uplinkhq/uplink/internal/apkcli/cmd/apk"

// DefaultTestRoot is where scripts/install-test-deps.sh unpacks what is
// not installed system-wide; $UPLINK_TEST_ROOT overrides it.
const DefaultTestRoot = "/opt/uplink-test"

// TestRoot returns $UPLINK_TEST_ROOT or DefaultTestRoot.
func TestRoot() string {
	if r := os.Getenv("UPLINK_TEST_ROOT"); r != "" {
		return r
	}
	return DefaultTestRoot
}

var (
	once     sync.Once
	tarball  []byte
	buildErr error
)

// Build writes the image tarball to dir/FileName and returns its path.
// The tarball (with the apk client compiled by `go build`) is made once
// per test binary and kept in memory.
func Build(t testing.TB, dir string) string {
	t.Helper()
	b, err := Image()
	if err != nil {
		t.Fatalf("incusimage: %v", err)
	}
	p := filepath.Join(dir, FileName)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatalf("incusimage: %v", err)
	}
	return p
}

// Image returns the image tarball, built on the first call.
func Image() ([]byte, error) {
	once.Do(func() { tarball, buildErr = buildImage() })
	return tarball, buildErr
}

// Busybox returns the static busybox binary the image is built from.
func Busybox() (string, error) {
	p := filepath.Join(TestRoot(), "busybox", "bin", "busybox")
	f, err := elf.Open(p)
	if err != nil {
		return "", fmt.Errorf("static busybox %s: %w (run scripts/install-test-deps.sh, which unpacks Debian's busybox-static there)", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", fmt.Errorf("%s is dynamically linked; the image needs busybox-static", p)
		}
	}
	return p, nil
}

// BuildAPK compiles the apk client, static, into dir/apk and returns its path.
func BuildAPK(dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(build.Default.GOROOT, "bin", "go")
	}
	out := filepath.Join(dir, "apk")
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, APKPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, b)
	}
	return out, nil
}

// Arch returns the image architecture (Incus/LXD and APK name) and the
// Debian-style name for metadata properties.
func Arch() (kernel, debian string) {
	switch runtime.GOARCH {
	case "arm64":
		return "aarch64", "arm64"
	default:
		return "x86_64", "amd64"
	}
}

func buildImage() ([]byte, error) {
	bbPath, err := Busybox()
	if err != nil {
		return nil, err
	}
	busybox, err := os.ReadFile(bbPath)
	if err != nil {
		return nil, err
	}
	list, err := exec.Command(bbPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %v", bbPath, err)
	}
	tmp, err := os.MkdirTemp("", "incusimage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	apkPath, err := BuildAPK(tmp)
	if err != nil {
		return nil, err
	}
	apk, err := os.ReadFile(apkPath)
	if err != nil {
		return nil, err
	}
	return Tarball(busybox, strings.Fields(string(list)), apk, time.Now())
}

// Tarball assembles the unified image from a static busybox binary, its
// applet names and a static apk binary.
func Tarball(busybox []byte, applets []string, apk []byte, created time.Time) ([]byte, error) {
	arch, debArch := Arch()
	img := &image{mtime: created}
	img.file("metadata.yaml", 0o644, fmt.Sprintf(`architecture: %s
creation_date: %d
properties:
  description: uplink test image (busybox posing as Alpine 3.20, real apk client)
  os: alpine
  release: "3.20"
  architecture: %s
  variant: uplink-test
templates:
  /etc/hostname:
    when:
      - create
      - copy
    template: hostname.tpl
`, arch, created.Unix(), debArch))
	img.dir("templates", 0o755)
	img.file("templates/hostname.tpl", 0o644, "{{ container.name }}\n")
	img.dir("rootfs", 0o755)

	for _, d := range []string{
		"bin", "sbin", "dev", "proc", "sys", "run", "home", "mnt", "srv", "opt",
		"etc", "etc/apk", "etc/apk/keys", "etc/apk/protected_paths.d", "etc/init.d", "etc/conf.d",
		"lib", "lib/apk", "lib/apk/db", "lib/apk/exec",
		"usr", "usr/bin", "usr/sbin", "usr/lib", "usr/local", "usr/local/bin", "usr/share",
		"var", "var/cache", "var/cache/apk", "var/cache/misc", "var/lib", "var/log",
		"var/tmp", "var/empty",
	} {
		img.dir("rootfs/"+d, 0o755)
	}
	img.dir("rootfs/tmp", 0o1777)
	img.dir("rootfs/root", 0o700)
	img.link("rootfs/var/run", "../run")

	img.add("rootfs/bin/busybox", 0o755, busybox)
	sort.Strings(applets)
	for _, a := range applets {
		if a == "busybox" || a == "apk" || strings.Contains(a, "/") {
			continue
		}
		img.link("rootfs/bin/"+a, "busybox")
	}
	img.link("rootfs/sbin/init", "../bin/busybox")
	img.add("rootfs/sbin/apk", 0o755, apk)

	img.file("rootfs/etc/inittab", 0o644, `# busybox init (uplink test image)
::sysinit:/bin/mount -t tmpfs -o mode=0755 tmpfs /run
::sysinit:/bin/ip link set lo up
::sysinit:/bin/touch `+BootedFile+`
::respawn:/bin/sleep 2147483647
::ctrlaltdel:/bin/true
::shutdown:/bin/sync
`)
	img.file("rootfs/etc/hostname", 0o644, "localhost\n")
	img.file("rootfs/etc/hosts", 0o644, "127.0.0.1\tlocalhost\n::1\tlocalhost\n")
	img.file("rootfs/etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n")
	img.file("rootfs/etc/group", 0o644, "root:x:0:root\nnogroup:x:65533:\nnobody:x:65534:\n")
	img.file("rootfs/etc/shadow", 0o640, "root:*::0:::::\nnobody:!::0:::::\n")
	img.file("rootfs/etc/shells", 0o644, "/bin/sh\n/bin/ash\n")
	img.file("rootfs/etc/profile", 0o644, "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
	img.file("rootfs/etc/alpine-release", 0o644, "3.20.0\n")
	img.file("rootfs/etc/os-release", 0o644, `NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.20.0
PRETTY_NAME="Alpine Linux v3.20 (uplink test image)"
HOME_URL="https://alpinelinux.org/"
`)
	img.file("rootfs/etc/apk/arch", 0o644, arch+"\n")
	img.file("rootfs/etc/apk/repositories", 0o644, "")
	img.file("rootfs/etc/apk/world", 0o644, "")
	img.file("rootfs/lib/apk/db/installed", 0o644, "")
	img.file("rootfs/lib/apk/db/triggers", 0o644, "")
	img.file("rootfs/lib/apk/db/lock", 0o600, "")
	return img.finish()
}

// image accumulates tar entries (all owned by root).
type image struct {
	buf   bytes.Buffer
	tw    *tar.Writer
	zw    *gzip.Writer
	mtime time.Time
	err   error
}

func (img *image) write(h *tar.Header, data []byte) {
	if img.err != nil {
		return
	}
	if img.tw == nil {
		img.zw = gzip.NewWriter(&img.buf)
		img.tw = tar.NewWriter(img.zw)
	}
	h.ModTime = img.mtime
	h.Uname, h.Gname = "root", "root"
	h.Format = tar.FormatPAX
	if img.err = img.tw.WriteHeader(h); img.err == nil && len(data) > 0 {
		_, img.err = img.tw.Write(data)
	}
}

func (img *image) dir(name string, mode int64) {
	img.write(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}, nil)
}

func (img *image) add(name string, mode int64, data []byte) {
	img.write(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, data)
}

func (img *image) file(name string, mode int64, content string) {
	img.add(name, mode, []byte(content))
}

func (img *image) link(name, target string) {
	img.write(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}, nil)
}

func (img *image) finish() ([]byte, error) {
	if img.err != nil {
		return nil, img.err
	}
	if img.tw == nil {
		return nil, errors.New("empty image")
	}
	if err := img.tw.Close(); err != nil {
		return nil, err
	}
	if err := img.zw.Close(); err != nil {
		return nil, err
	}
	return img.buf.Bytes(), nil
}
