package incus

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

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
			if !c.HasExtension("api_filtering") {
				t.Errorf("%s %s lacks api_filtering", d.Kind, d.Version)
			}
			t.Run("TLS", func(t *testing.T) { daemonTLS(t, ctx, d) })
			t.Run("Errors", func(t *testing.T) { daemonErrors(t, ctx, d, c) })
			t.Run("Lifecycle", func(t *testing.T) { daemonLifecycle(t, ctx, d, c) })
			t.Run("Project", func(t *testing.T) { daemonProject(t, ctx, d, c) })
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
	if _, err := c.GetInstancesWithFilter(ctx, InstanceTypeAny, nil); err != nil {
		t.Fatal(err)
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
		Source: InstanceSource{Type: "image", Alias: "no/such-image"}})
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

	// Create, then start, as the rollout does.
	op, err := c.CreateInstance(ctx, InstancesPost{
		Name: name, Type: InstanceTypeContainer,
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
	if op, err = c.UpdateInstanceState(ctx, name, InstanceStatePut{Action: "start"}, ""); err == nil {
		err = op.WaitContext(ctx)
	}
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	inst, etag, err := c.GetInstance(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Status != "Running" || inst.StatusCode != Running || etag == "" {
		t.Fatalf("after create and start: %s (%d), etag %q", inst.Status, inst.StatusCode, etag)
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
	if code, err := c.ExecInstance(ctx, name, InstanceExecPost{Command: []string{"rm", "/etc/apk/keys/acme.rsa.pub"}}, nil); err != nil || code != 0 {
		t.Fatalf("rm: %d %v", code, err)
	}
	if _, _, err := c.GetInstanceFile(ctx, name, "/etc/apk/keys/acme.rsa.pub"); !IsNotFound(err) {
		t.Errorf("deleted file: %v", err)
	}

	// Errors of a running instance.
	if _, err := c.DeleteInstance(ctx, name); err == nil || IsNotFound(err) {
		t.Errorf("delete of a running instance: %v", err)
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
	op, err := pc.CreateInstance(ctx, InstancesPost{Name: name, Source: InstanceSource{Type: "image", Fingerprint: d.ImageFingerprint}})
	if err == nil {
		err = op.WaitContext(ctx)
	}
	if err != nil {
		t.Fatalf("create in project: %v", err)
	}
	if op, err = pc.UpdateInstanceState(ctx, name, InstanceStatePut{Action: "start"}, ""); err == nil {
		err = op.WaitContext(ctx)
	}
	if err != nil {
		t.Fatalf("start in project: %v", err)
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
	list, err := pc.GetInstancesWithFilter(ctx, InstanceTypeAny, nil)
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
