package testenv

import (
	"encoding/json"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/uplinkhq/uplink/internal/apktest"
)

func TestIncusAPKEndToEnd(t *testing.T) { testAPKEndToEnd(t, StartIncus(t)) }

func TestLXDAPKEndToEnd(t *testing.T) { testAPKEndToEnd(t, StartLXD(t)) }

// repoServer serves a mutable APK repository below prefix on the host.
type repoServer struct {
	mu    sync.Mutex
	files map[string][]byte
	srv   *httptest.Server
}

const repoPrefix = "/distribution/main/acme/app/"

func newRepoServer(t *testing.T) *repoServer {
	r := &repoServer{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		b, ok := r.files[strings.TrimPrefix(req.URL.Path, repoPrefix)]
		r.mu.Unlock()
		if !ok || !strings.HasPrefix(req.URL.Path, repoPrefix) {
			http.NotFound(w, req)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *repoServer) publish(files map[string][]byte) {
	r.mu.Lock()
	r.files = maps.Clone(files)
	r.mu.Unlock()
}

func helloPackage(version string) apktest.Package {
	return apktest.Package{
		Name: "hello", Version: version, Description: "Hello world",
		Depends: []string{"libhello"},
		Files: []apktest.File{
			{Path: "usr/share/hello/VERSION", Data: []byte(version + "\n")},
			{Path: "usr/bin/hello", Mode: 0o755, Data: []byte("#!/bin/sh\necho hello " + version + "\n")},
			{Path: "usr/bin/hi", Mode: fs.ModeSymlink, Data: []byte("hello")},
		},
	}
}

var libhelloPackage = apktest.Package{
	Name: "libhello", Version: "1.0-r0", Arch: "noarch",
	Files: []apktest.File{{Path: "usr/lib/libhello.txt", Data: []byte("lib\n")}},
}

// testAPKEndToEnd runs what uplink does to an instance against a real
// daemon: a container from the test image reaches a signed repository on
// the host through a proxy device, and the image's apk installs and then
// upgrades a package from it.
func testAPKEndToEnd(t *testing.T, d *Incus) {
	t.Logf("%s %s: started in %v, set up in %v, dir %s", d.Kind, d.Version, d.StartupTime, d.SetupTime, d.Dir)

	// HTTPS with the trusted client certificate.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: d.TLSConfig()}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + d.HTTPSAddress + "/1.0")
	if err != nil {
		t.Fatalf("HTTPS GET /1.0: %v", err)
	}
	var env Response
	json.NewDecoder(resp.Body).Decode(&env)
	resp.Body.Close()
	var srv serverInfo
	json.Unmarshal(env.Metadata, &srv)
	if srv.Auth != "trusted" || srv.Environment.Server != d.Kind {
		t.Errorf("HTTPS GET /1.0: auth %q, server %q", srv.Auth, srv.Environment.Server)
	}

	key := apktest.NewKey(t)
	repo := newRepoServer(t)
	repo.publish(apktest.BuildRepository(t, key, "x86_64", helloPackage("1.0-r0"), libhelloPackage))
	_, port, _ := net.SplitHostPort(repo.srv.Listener.Addr().String())

	project := d.NewProject(t)
	name := UniqueName("apk")
	d.Launch(t, project, name, map[string]map[string]string{
		"uplink-repo": {"type": "proxy", "bind": "instance", "listen": "tcp:127.0.0.1:4080", "connect": "tcp:127.0.0.1:" + port},
	})
	if st := d.State(t, project, name); st != "Running" {
		t.Fatalf("instance %s is %s", name, st)
	}
	d.PushFile(t, project, name, "/etc/apk/keys/"+key.Name, key.PublicPEM(), 0o644)
	d.PushFile(t, project, name, "/etc/apk/repositories", []byte("http://127.0.0.1:4080"+strings.TrimSuffix(repoPrefix, "/")+"\n"), 0o644)

	run := func(cmd string) ExecResult {
		t.Helper()
		res := d.Exec(t, project, name, "/bin/sh", "-c", cmd)
		t.Logf("%s -> %d\nstdout:\n%sstderr:\n%s", cmd, res.Return, res.Stdout, res.Stderr)
		return res
	}
	res := run("apk update && apk add hello")
	if res.Return != 0 || !strings.Contains(res.Stdout, "Installing hello (1.0-r0)") {
		t.Fatalf("apk add hello: exit %d", res.Return)
	}
	if got := string(d.ReadFile(t, project, name, "/usr/share/hello/VERSION")); got != "1.0-r0\n" {
		t.Errorf("VERSION = %q, want 1.0-r0", got)
	}
	if res := run("hi"); res.Return != 0 || res.Stdout != "hello 1.0-r0\n" {
		t.Errorf("hi: exit %d, %q", res.Return, res.Stdout)
	}

	// A new version. Like apk-tools 2.14, a plain `apk update` keeps an
	// index younger than 4 h (apk-protocol.md §7.2): it does not see it.
	repo.publish(apktest.BuildRepository(t, key, "x86_64", helloPackage("1.1-r0"), libhelloPackage))
	if res := run("apk update && apk add --upgrade hello"); res.Return != 0 || strings.Contains(res.Stdout, "Upgrading") || strings.Contains(res.Stdout, "fetch ") {
		t.Errorf("plain apk update: exit %d, fetched or upgraded from a cached index younger than 4 h", res.Return)
	}
	// --force-refresh always fetches; then `apk add --upgrade` installs it.
	res = run("apk --force-refresh update && apk add --upgrade hello")
	if res.Return != 0 || !strings.Contains(res.Stdout, "Upgrading hello (1.0-r0 -> 1.1-r0)") {
		t.Fatalf("apk add --upgrade hello: exit %d", res.Return)
	}
	if got := string(d.ReadFile(t, project, name, "/usr/share/hello/VERSION")); got != "1.1-r0\n" {
		t.Errorf("VERSION after upgrade = %q, want 1.1-r0", got)
	}
	if res := run("apk info -v"); res.Stdout != "libhello-1.0-r0\nhello-1.1-r0\n" {
		t.Errorf("apk info -v = %q", res.Stdout)
	}

	// Failures exit non-zero with the reason on stderr.
	if res := run("apk add nosuch"); res.Return == 0 || !strings.Contains(res.Stderr, "unable to select packages") {
		t.Errorf("apk add nosuch: exit %d, stderr %q", res.Return, res.Stderr)
	}
	repo.publish(apktest.BuildRepository(t, apktest.GenerateKey(t), "x86_64", helloPackage("1.2-r0"), libhelloPackage))
	if res := run("apk --force-refresh update"); res.Return == 0 || !strings.Contains(res.Stderr, "UNTRUSTED signature") {
		t.Errorf("apk update from an untrusted signer: exit %d, stderr %q", res.Return, res.Stderr)
	}
}
