package incus

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	ops "github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/incusimage"
	"github.com/uplinkhq/uplink/internal/testenv"
)

// TestDaemon runs every call of the client against real daemons, Incus
// 6.0 and LXD 5.0 (internal/testenv), errors included.
func TestDaemon(t *testing.T) {
	for _, kind := range []struct {
		dialect Dialect
		start   func(testing.TB) *testenv.Incus
	}{{DialectIncus, testenv.StartIncus}, {DialectLXD, testenv.StartLXD}} {
		t.Run(string(kind.dialect), func(t *testing.T) {
			d := kind.start(t)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			c, err := ConnectIncusUnix(ctx, d.Socket, &ConnectionArgs{UserAgent: "uplink-test"})
			if err != nil {
				t.Fatal(err)
			}
			if c.Dialect() != kind.dialect {
				t.Fatalf("dialect %q, want %q", c.Dialect(), kind.dialect)
			}
			incus := kind.dialect == DialectIncus
			if c.HasExtension("instances_rebuild") != incus || c.HasExtension("instance_create_start") != incus ||
				!c.HasExtension("api_filtering") || !c.HasExtension("file_delete") {
				t.Errorf("extensions of %s %s: rebuild %v, create_start %v", d.Kind, d.Version,
					c.HasExtension("instances_rebuild"), c.HasExtension("instance_create_start"))
			}
			t.Run("TLS", func(t *testing.T) { daemonTLS(t, ctx, d) })
			t.Run("Errors", func(t *testing.T) { daemonErrors(t, ctx, d, c) })
			t.Run("Lifecycle", func(t *testing.T) { daemonLifecycle(t, ctx, d, c) })
			t.Run("Project", func(t *testing.T) { daemonProject(t, ctx, d, c) })
			t.Run("Install", func(t *testing.T) { daemonInstall(t, ctx, d, c) })
		})
	}
}

func daemonTLS(t *testing.T, ctx context.Context, d *testenv.Incus) {
	url := "https://" + d.HTTPSAddress
	trusted := ConnectionArgs{TLSClientCert: string(d.ClientCert), TLSClientKey: string(d.ClientKey), TLSServerCert: string(d.ServerCert)}
	c, err := ConnectIncus(ctx, url, &trusted)
	if err != nil {
		t.Fatalf("pinned server certificate: %v", err)
	}
	if _, err := c.GetInstances(ctx, InstanceTypeAny); err != nil {
		t.Fatal(err)
	}
	byFingerprint := trusted
	byFingerprint.TLSServerCert, byFingerprint.TLSServerFingerprint = "", d.ServerFingerprint()
	if _, err := ConnectIncus(ctx, url, &byFingerprint); err != nil {
		t.Errorf("pinned fingerprint: %v", err)
	}

	other := newTestCert(t, "root@other", []string{"other"}, x509.ExtKeyUsageServerAuth)
	wrongServer := trusted
	wrongServer.TLSServerCert = other.certPEM
	if _, err := ConnectIncus(ctx, url, &wrongServer); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("wrong server certificate: %v", err)
	}
	stranger := newTestCert(t, "stranger", nil, x509.ExtKeyUsageClientAuth)
	untrusted := trusted
	untrusted.TLSClientCert, untrusted.TLSClientKey = stranger.certPEM, stranger.keyPEM
	_, err = ConnectIncus(ctx, url, &untrusted)
	var se *StatusError
	if !errors.As(err, &se) || se.Status() != http.StatusForbidden {
		t.Errorf("untrusted client certificate: %v", err)
	}
	// The daemon refuses TLS 1.2, which our client never offers anyway.
	conn, err := tls.Dial("tcp", d.HTTPSAddress, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	if err == nil {
		conn.Close()
		t.Errorf("the daemon accepted TLS 1.2")
	}
}

func daemonErrors(t *testing.T, ctx context.Context, d *testenv.Incus, c *ProtocolIncus) {
	if _, _, err := c.GetInstance(ctx, "missing-instance"); !IsNotFound(err) {
		t.Errorf("missing instance: %v", err)
	}
	if _, _, err := c.GetInstanceState(ctx, "missing-instance"); !IsNotFound(err) {
		t.Errorf("state of a missing instance: %v", err)
	}
	if _, err := c.ExecInstance(ctx, "missing-instance", InstanceExecPost{Command: []string{"true"}}, nil); !IsNotFound(err) {
		t.Errorf("exec in a missing instance: %v", err)
	}
	if _, err := c.DeleteInstance(ctx, "missing-instance"); !IsNotFound(err) {
		t.Errorf("delete of a missing instance: %v", err)
	}
	if _, _, err := c.GetOperation(ctx, "7c2b7c1e-0000-4000-8000-000000000000"); !IsNotFound(err) {
		t.Errorf("missing operation: %v", err)
	}
	if _, _, err := c.GetOperationWait(ctx, "7c2b7c1e-0000-4000-8000-000000000000", 1); !IsNotFound(err) {
		t.Errorf("wait on a missing operation: %v", err)
	}
	if _, err := c.GetNetworkLeases(ctx, "missing-network"); !IsNotFound(err) {
		t.Errorf("leases of a missing network: %v", err)
	}
	if _, err := c.GetNetworks(ctx); err != nil {
		t.Errorf("networks: %v", err)
	}

	// A bad image alias fails the call or its operation.
	name := testenv.UniqueName("bad")
	op, err := c.CreateInstance(ctx, InstancesPost{Name: name, Type: InstanceTypeContainer,
		Source: InstanceSource{Type: "image", Alias: "no/such-image"}, Start: true})
	if err == nil {
		t.Cleanup(func() { removeInstance(c, name) })
		err = op.WaitContext(ctx)
	}
	if err == nil {
		t.Fatal("created an instance from a missing image")
	}
	t.Logf("bad image alias: %T %v", err, err)
}

func daemonLifecycle(t *testing.T, ctx context.Context, d *testenv.Incus, c *ProtocolIncus) {
	name := testenv.UniqueName("up")
	installation := testenv.UniqueName("inst")
	t.Cleanup(func() { removeInstance(c, name) })

	// Create and start in one call: LXD needs the explicit start.
	op, err := c.CreateInstance(ctx, InstancesPost{
		Name: name, Type: InstanceTypeContainer, Start: true,
		Source: InstanceSource{Type: "image", Alias: d.ImageAlias},
		InstancePut: InstancePut{Profiles: []string{"default"}, Config: map[string]string{
			"user.managed_by": "uplink", "user.uplink.installation": installation, "user.uplink.pin": "branch:main",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.WaitContext(ctx); err != nil {
		t.Fatalf("create: %v\n%s", err, d.LogTail())
	}
	inst, etag, err := c.GetInstance(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Status != "Running" || inst.StatusCode != Running || etag == "" {
		t.Fatalf("after create with start: %s (%d), etag %q", inst.Status, inst.StatusCode, etag)
	}
	st, _, err := c.GetInstanceState(ctx, name)
	if err != nil || st.StatusCode != Running || st.Pid <= 0 {
		t.Errorf("state %+v, %v", st, err)
	}

	list, err := c.GetInstancesWithFilter(ctx, InstanceTypeContainer, []string{"config.user.uplink.installation=" + installation, "status=Running"})
	if err != nil || len(list) != 1 || list[0].Name != name {
		t.Errorf("filter: %v, %v", list, err)
	}
	list, err = c.GetInstancesWithFilter(ctx, InstanceTypeAny, []string{"config.user.uplink.installation=" + installation, "status=Stopped"})
	if err != nil || len(list) != 0 {
		t.Errorf("filter on Stopped: %v, %v", list, err)
	}

	if err := c.PatchInstance(ctx, name, InstancePut{Config: map[string]string{"user.uplink.pin": "commit:abc123"}}, etag); err != nil {
		t.Fatal(err)
	}
	err = c.PatchInstance(ctx, name, InstancePut{Config: map[string]string{"user.uplink.pin": "stale"}}, etag)
	if se := (*StatusError)(nil); !errors.As(err, &se) || se.Status() != http.StatusPreconditionFailed {
		t.Errorf("PATCH with a stale ETag: %v", err)
	}
	if inst, _, _ = c.GetInstance(ctx, name); inst.Config["user.uplink.pin"] != "commit:abc123" || inst.Config["user.uplink.installation"] != installation {
		t.Errorf("config after PATCH: %v", inst.Config)
	}

	// Exec: exit codes and recorded output, which must not linger.
	var stdout, stderr bytes.Buffer
	code, err := c.ExecInstance(ctx, name, InstanceExecPost{Command: []string{"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}},
		&InstanceExecArgs{Stdout: &stdout, Stderr: &stderr})
	if err != nil || code != 3 || stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Errorf("exec: %d, %v, stdout %q, stderr %q", code, err, stdout.String(), stderr.String())
	}
	stdout.Reset()
	code, err = c.ExecInstance(ctx, name, InstanceExecPost{Command: []string{"/no/such/command"}}, &InstanceExecArgs{Stdout: &stdout, Stderr: &stdout})
	var opErr *OperationError
	if code != 127 || !errors.As(err, &opErr) {
		t.Errorf("missing command: %d, %T %v", code, err, err)
	}
	code, err = c.ExecInstance(ctx, name, InstanceExecPost{Command: []string{"/bin/sh", "-c", `test "$A" = b`}, Environment: map[string]string{"A": "b"}}, nil)
	if err != nil || code != 0 {
		t.Errorf("exec without output: %d, %v", code, err)
	}
	if left := execOutputFiles(t, ctx, d, name); len(left) > 0 {
		t.Errorf("exec output left on the server: %v", left)
	}

	// A wait that times out before the operation ends, both ways.
	eop, err := c.queryOperation(ctx, http.MethodPost, instancePath(name)+"/exec", nil, InstanceExecPost{Command: []string{"sleep", "2"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	info, _, err := c.GetOperationWait(ctx, eop.Get().ID, 1)
	switch {
	case err == nil && info.StatusCode == Running:
		t.Logf("wait timeout: sync with status %d", info.StatusCode)
	case err != nil && strings.Contains(err.Error(), "context deadline exceeded"):
		t.Logf("wait timeout: %v (the Incus 6.0 form)", err)
	default:
		t.Errorf("wait timeout: %+v, %v", info, err)
	}
	if err := eop.WaitContext(ctx); err != nil {
		t.Errorf("wait after a timeout: %v", err)
	}

	// Files: a round trip under both header prefixes, with mode and owner.
	key := "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"
	if err := c.CreateInstanceFile(ctx, name, "/etc/apk/keys", InstanceFileArgs{Type: "directory", Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateInstanceFile(ctx, name, "/etc/apk/keys/acme.rsa.pub", InstanceFileArgs{Content: strings.NewReader(key), Mode: 0o640, GID: 2}); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateInstanceFile(ctx, name, "/etc/apk/keys/acme.rsa.pub", InstanceFileArgs{Content: strings.NewReader("#\n"), WriteMode: "append", UID: -1, GID: -1}); err != nil {
		t.Fatal(err)
	}
	rc, fr, err := c.GetInstanceFile(ctx, name, "/etc/apk/keys/acme.rsa.pub")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != key+"#\n" || fr.Mode != 0o640 || fr.UID != 0 || fr.GID != 2 || fr.Type != "file" {
		t.Errorf("file %q, %+v", b, fr)
	}
	if _, fr, err = c.GetInstanceFile(ctx, name, "/etc/apk/keys"); err != nil || fr.Type != "directory" || !slices.Contains(fr.Entries, "acme.rsa.pub") {
		t.Errorf("directory %+v, %v", fr, err)
	}
	if err := c.DeleteInstanceFile(ctx, name, "/etc/apk/keys/acme.rsa.pub"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.GetInstanceFile(ctx, name, "/etc/apk/keys/acme.rsa.pub"); !IsNotFound(err) {
		t.Errorf("deleted file: %v", err)
	}
	if err := c.CreateInstanceFile(ctx, name, "/etc/marker", InstanceFileArgs{Content: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}

	// Errors of a running instance.
	if _, err := c.DeleteInstance(ctx, name); err == nil || IsNotFound(err) {
		t.Errorf("delete of a running instance: %v", err)
	}
	if op, err = c.RebuildInstance(ctx, name, InstanceRebuildPost{Source: InstanceSource{Type: "image", Alias: d.ImageAlias}}); err == nil {
		err = op.WaitContext(ctx)
	}
	if err == nil {
		t.Errorf("rebuild of a running instance succeeded")
	}

	// Stop, then stop again: already stopped is success.
	for i := range 2 {
		op, err := c.UpdateInstanceState(ctx, name, InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, "")
		if err == nil {
			err = op.WaitContext(ctx)
		}
		if err != nil {
			t.Fatalf("stop %d: %v", i+1, err)
		}
	}
	if inst, _, _ = c.GetInstance(ctx, name); inst.Status != "Stopped" {
		t.Fatalf("after stop: %s", inst.Status)
	}
	var se *StatusError
	if _, err := c.ExecInstance(ctx, name, InstanceExecPost{Command: []string{"true"}}, nil); !errors.As(err, &se) || se.Status() != 400 {
		t.Errorf("exec in a stopped instance: %v", err)
	}

	// Rebuild keeps config, drops the root's files; LXD 5.0 has none.
	op, err = c.RebuildInstance(ctx, name, InstanceRebuildPost{Source: InstanceSource{Type: "image", Alias: d.ImageAlias}})
	if d.Kind == "lxd" {
		if !errors.Is(err, ErrMissingExtension) {
			t.Errorf("rebuild on LXD: %v", err)
		}
	} else {
		if err == nil {
			err = op.WaitContext(ctx)
		}
		if err != nil {
			t.Fatalf("rebuild: %v", err)
		}
		if inst, _, _ = c.GetInstance(ctx, name); inst.Config["user.uplink.pin"] != "commit:abc123" {
			t.Errorf("config after rebuild: %v", inst.Config)
		}
		if op, err = c.UpdateInstanceState(ctx, name, InstanceStatePut{Action: "start"}, ""); err == nil {
			err = op.WaitContext(ctx)
		}
		if err != nil {
			t.Fatalf("start after rebuild: %v", err)
		}
		if _, _, err := c.GetInstanceFile(ctx, name, "/etc/marker"); !IsNotFound(err) {
			t.Errorf("file after rebuild: %v", err)
		}
		if op, err = c.UpdateInstanceState(ctx, name, InstanceStatePut{Action: "stop", Force: true}, ""); err == nil {
			err = op.WaitContext(ctx)
		}
		if err != nil {
			t.Fatalf("stop after rebuild: %v", err)
		}
	}

	if op, err = c.DeleteInstance(ctx, name); err == nil {
		err = op.WaitContext(ctx)
	}
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, _, err := c.GetInstance(ctx, name); !IsNotFound(err) {
		t.Errorf("after delete: %v", err)
	}
}

// daemonProject checks that UseProject reaches instances, exec output
// included, that the default project does not see.
func daemonProject(t *testing.T, ctx context.Context, d *testenv.Incus, c *ProtocolIncus) {
	project := d.NewProject(t)
	pc := c.UseProject(project)
	name := testenv.UniqueName("proj")
	op, err := pc.CreateInstance(ctx, InstancesPost{Name: name, Source: InstanceSource{Type: "image", Fingerprint: d.ImageFingerprint}, Start: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.WaitContext(ctx); err != nil {
		t.Fatalf("create in project: %v", err)
	}
	if _, _, err := c.GetInstance(ctx, name); !IsNotFound(err) {
		t.Errorf("default project sees %s: %v", name, err)
	}
	inst, _, err := pc.GetInstance(ctx, name)
	if err != nil || inst.Project != project && inst.Project != "" {
		t.Fatalf("in project: %+v, %v", inst, err)
	}
	var out bytes.Buffer
	if code, err := pc.ExecInstance(ctx, name, InstanceExecPost{Command: []string{"hostname"}}, &InstanceExecArgs{Stdout: &out}); err != nil || code != 0 || out.String() != name+"\n" {
		t.Errorf("exec in project: %d, %v, %q", code, err, out.String())
	}
	list, err := pc.GetInstances(ctx, InstanceTypeAny)
	if err != nil || len(list) != 1 || list[0].Name != name {
		t.Errorf("list in project: %v, %v", list, err)
	}
	// pc's own cleanup: the project's (registered first) runs after it.
	removeInstance(pc, name)
}

// execOutputFiles lists the recorded exec output still on the server.
func execOutputFiles(t *testing.T, ctx context.Context, d *testenv.Incus, name string) []string {
	path := "/1.0/instances/" + name + "/logs"
	if d.Kind == "incus" {
		path += "/exec-output"
	}
	resp, err := d.Query(ctx, http.MethodGet, path, nil)
	if err != nil {
		t.Fatalf("list logs: %v", err)
	}
	var files []string
	json.Unmarshal(resp.Metadata, &files)
	return slices.DeleteFunc(files, func(f string) bool { return !strings.Contains(f, "exec_") })
}

// removeInstance force-stops and deletes an instance, ignoring errors.
func removeInstance(c *ProtocolIncus, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if op, err := c.UpdateInstanceState(ctx, name, InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, ""); err == nil {
		op.WaitContext(ctx)
	}
	if op, err := c.DeleteInstance(ctx, name); err == nil {
		op.WaitContext(ctx)
	}
}

// daemonInstall runs the install step against a real instance whose apk
// is a stand-in script: one that exits 0 yet installs nothing (as
// apk-tools 2.14 does after an update that kept a stale index) must fail
// the step naming both versions and leave the labels alone; one that
// installs gets the instance labelled with what its database says. The
// observer reads the database, not the labels.
func daemonInstall(t *testing.T, ctx context.Context, d *testenv.Incus, c *ProtocolIncus) {
	project := d.NewProject(t)
	pc := c.UseProject(project)
	name := testenv.UniqueName("inst")
	d.Launch(t, project, name, nil)
	installation := "web-" + name
	if err := pc.PatchInstance(ctx, name, InstancePut{Config: map[string]string{LabelManaged: managedBy, LabelInstallation: installation,
		LabelCommit: "c1", LabelPackage: "hello", LabelVersion: "1.0-r0"}}, ""); err != nil {
		t.Fatal(err)
	}
	push := func(path, content string, mode int) {
		t.Helper()
		if err := pc.CreateInstanceFile(ctx, name, path, InstanceFileArgs{Content: strings.NewReader(content), Mode: mode}); err != nil {
			t.Fatalf("push %s: %v", path, err)
		}
	}
	for _, dir := range []string{"/usr/local", "/usr/local/bin"} {
		if err := pc.CreateInstanceFile(ctx, name, dir, InstanceFileArgs{Type: "directory", Mode: 0o755}); err != nil {
			t.Fatal(err)
		}
	}
	db := func(version string) string {
		return "C:Q1aaaa=\nP:busybox\nV:1.36.1-r0\nA:x86_64\n\nC:Q1bbbb=\nP:hello\nV:" + version + "\nA:noarch\nF:usr/share/hello\nR:VERSION\n\n"
	}
	push("/lib/apk/db/installed", db("1.0-r0"), 0o644)
	// /usr/local/bin comes before /sbin in the PATH exec runs with.
	push("/usr/local/bin/apk", "#!/bin/sh\necho \"lazy apk: $*\"\n", 0o755)

	arch, _ := incusimage.Arch()
	b := NewBackend(BackendConfig{Client: c, HealthTimeout: 3 * time.Second})
	op := &ops.Operation{ID: installation + ".2", Kind: ops.KindUpgrade, Installation: installation}
	tg := ops.Target{Installation: installation, Project: project, Package: "hello", Commit: "c2", Ref: "main", Count: 1,
		Versions: map[string]string{arch: "2.0-r0", "riscv64": "2.0-r1"}}
	var log []string
	logf := func(l string) { log = append(log, l) }
	steps := b.Steps(op, tg)
	err := b.Do(ctx, steps[0], op, tg, logf)
	if err == nil || !strings.Contains(err.Error(), "hello 1.0-r0") || !strings.Contains(err.Error(), "not 2.0-r0") {
		t.Fatalf("an apk that installed nothing: %v\n%s", err, strings.Join(log, "\n"))
	}
	for _, want := range []string{name + ": $ apk --force-refresh update", name + ": $ apk add hello=2.0-r0", "lazy apk: add hello=2.0-r0"} {
		if !slices.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, strings.Join(log, "\n"))
		}
	}
	if in, _, _ := pc.GetInstance(ctx, name); in.Config[LabelCommit] != "c1" || in.Config[LabelVersion] != "1.0-r0" {
		t.Errorf("labels after a failed check: %v", in.Config)
	}

	// The reconciler's observer reports the database's version.
	r := &Reconciler{Client: c, Logger: slog.Default()}
	push("/lib/apk/db/installed", db("1.5-r0"), 0o644)
	obs, err := r.observe(ctx, installation, project)
	if err != nil || len(obs) != 1 || obs[0].Version != "1.5-r0" || obs[0].Commit != "c1" || obs[0].Arch != arch || obs[0].State != "Running" {
		t.Fatalf("observed %+v, %v", obs, err)
	}

	// An apk that installs what it is asked for; without /etc/apk/arch
	// the arch is Incus's.
	push("/usr/local/bin/apk", `#!/bin/sh
case "$1" in
add) v="${2#hello=}"; printf 'P:hello\nV:%s\n\n' "$v" >/lib/apk/db/installed; echo "(1/1) Installing hello ($v)";;
esac
`, 0o755)
	if err := pc.DeleteInstanceFile(ctx, name, "/etc/apk/arch"); err != nil {
		t.Fatal(err)
	}
	log = nil
	if err := b.Do(ctx, steps[0], op, tg, logf); err != nil {
		t.Fatalf("install: %v\n%s", err, strings.Join(log, "\n"))
	}
	if !slices.Contains(log, "(1/1) Installing hello (2.0-r0)") || !slices.Contains(log, name+": hello 2.0-r0 installed (read back from /lib/apk/db/installed)") ||
		!strings.Contains(strings.Join(log, "\n"), "no /etc/apk/arch") {
		t.Errorf("log:\n%s", strings.Join(log, "\n"))
	}
	in, _, _ := pc.GetInstance(ctx, name)
	if in.Config[LabelCommit] != "c2" || in.Config[LabelRef] != "main" || in.Config[LabelVersion] != "2.0-r0" || in.Config[LabelPackage] != "hello" {
		t.Errorf("labels after the check: %v", in.Config)
	}
	if v, err := installedVersion(ctx, pc, name, "busybox"); err != nil || v != "" {
		t.Errorf("a package the database no longer lists: %q %v", v, err)
	}
}
