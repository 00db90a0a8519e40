package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/installation"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/testenv"
	"github.com/uplinkhq/uplink/operation"
	"github.com/uplinkhq/uplink/server"
)

// incusSite is an uplink whose instance backend is a real Incus daemon:
// instances reach uplink's distribution listener through a proxy device,
// and install with a real APK client (go-apk) inside the container.
type incusSite struct {
	*node
	inc     *testenv.Incus
	project string
	c       *instance.ProtocolIncus
	key     apktest.Key
}

func incusConfig(t *testing.T, inc *testenv.Incus, project string, dataDir string) server.Config {
	cfg := opsConfig(baseConfig(t))
	if dataDir != "" {
		cfg.DataDir = dataDir
	}
	port := testenv.FreePort(t)
	cfg.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.DistributionURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg.Incus = "unix://" + inc.Socket
	cfg.IncusProject = project
	cfg.IncusProxyDistribution = true
	cfg.OperationLease = 10 * time.Second
	cfg.ReconcileInterval = time.Hour
	return cfg
}

func newIncusSite(t *testing.T, daemon ...func(testing.TB) *testenv.Incus) *incusSite {
	startDaemon := testenv.StartIncus
	if len(daemon) > 0 {
		startDaemon = daemon[0]
	}
	inc := startDaemon(t)
	project := inc.NewProject(t)
	n := start(t, incusConfig(t, inc, project, ""))
	c, err := instance.ConnectIncusUnix(context.Background(), inc.Socket, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &incusSite{node: n, inc: inc, project: project, c: c.UseProject(project), key: apktest.NewKey(t)}
}

func (s *incusSite) spec(health ...string) installation.Spec {
	sp := webSpec(s.key, operation.Channel{Branch: "main"})
	sp.Instances = installation.Instances{Count: 1, Image: s.inc.ImageAlias}
	sp.HealthCommand = health
	return sp
}

// instances lists the project's instances: name → commit label.
func (s *incusSite) instances(t *testing.T) map[string]string {
	t.Helper()
	list, err := s.c.GetInstances(context.Background(), instance.InstanceTypeContainer)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, in := range list {
		if in.Status != "Running" {
			out[in.Name] = "not running: " + in.Status
			continue
		}
		out[in.Name] = in.Config[instance.LabelCommit]
	}
	return out
}

// file reads a file inside an instance.
func (s *incusSite) file(t *testing.T, inst, path string) string {
	t.Helper()
	rc, _, err := s.c.GetInstanceFile(context.Background(), inst, path)
	if err != nil {
		t.Fatalf("reading %s in %s: %v", path, inst, err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// only returns the single instance of the project and its commit label.
func (s *incusSite) only(t *testing.T) (string, string) {
	t.Helper()
	insts := s.instances(t)
	if len(insts) != 1 {
		t.Fatalf("want exactly one instance, have %v", insts)
	}
	for name, commit := range insts {
		return name, commit
	}
	return "", ""
}

func mustSucceed(t *testing.T, n *node, op *operation.Operation) *operation.Operation {
	t.Helper()
	op = waitOp(t, n, op.ID, 5*time.Minute)
	if op.State != operation.Succeeded {
		var log []string
		for _, l := range op.Log {
			log = append(log, l.Line)
		}
		t.Fatalf("operation %s %s: %s\n%s", op.ID, op.State, op.Error, strings.Join(log, "\n"))
	}
	return op
}

// TestIncusMission is the whole mission on a real daemon: track main
// (the container installs B), pin to A (a fresh container installs A, the
// old one is gone), track main again (B), publish C (upgraded in place).
func TestIncusMission(t *testing.T) { mission(t, newIncusSite(t)) }

// TestLXDMission runs the same on LXD 5.0 (no create-and-start, other
// exec output paths): the client's dialect switch.
func TestLXDMission(t *testing.T) { mission(t, newIncusSite(t, testenv.StartLXD)) }

func mission(t *testing.T, s *incusSite) {
	a, b, c := commitOf("A"), commitOf("B"), commitOf("C")
	s.publish(t, a, "main", hello(t, s.key, "1.0-r0", "A"))
	s.publish(t, b, "main", hello(t, s.key, "2.0-r0", "B"))

	v := putInstallation(t, s.node, "web", s.spec())
	mustSucceed(t, s.node, v.LastOperation)
	first, commit := s.only(t)
	if commit != b || s.file(t, first, "/usr/share/hello/VERSION") != "B" {
		t.Fatalf("tracking main: %s runs %s, file %q", first, commit, s.file(t, first, "/usr/share/hello/VERSION"))
	}
	if repos := s.file(t, first, "/etc/apk/repositories"); !strings.Contains(repos, "/distribution/main/"+testApp) {
		t.Fatalf("repositories: %q", repos)
	}
	v = getInstallation(t, s.node, "web")
	if len(v.Observed) != 1 || v.Observed[0].Name != first || v.Observed[0].Commit != b || v.Observed[0].State != "Running" {
		t.Fatalf("observed: %+v", v.Observed)
	}

	op, err := setChannel(t, s.node, "web", map[string]string{"commit": a[:10]})
	if err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, s.node, op)
	pinned, commit := s.only(t)
	if pinned == first || commit != a || s.file(t, pinned, "/usr/share/hello/VERSION") != "A" {
		t.Fatalf("pinned: %s (was %s) runs %s, file %q", pinned, first, commit, s.file(t, pinned, "/usr/share/hello/VERSION"))
	}
	if repos := s.file(t, pinned, "/etc/apk/repositories"); !strings.Contains(repos, "/distribution/"+a+"/"+testApp) {
		t.Fatalf("pinned repositories: %q", repos)
	}

	op, err = setChannel(t, s.node, "web", map[string]string{"branch": "main"})
	if err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, s.node, op)
	tracking, commit := s.only(t)
	if commit != b || s.file(t, tracking, "/usr/share/hello/VERSION") != "B" {
		t.Fatalf("tracking again: %s runs %s", tracking, commit)
	}

	s.publish(t, c, "main", hello(t, s.key, "3.0-r0", "C"))
	var up *operation.Operation
	eventually(t, 10*time.Second, "an upgrade starts", func() bool {
		if ops := operations(t, s.node, "web"); ops[0].Kind == operation.KindUpgrade {
			up = ops[0]
		}
		return up != nil
	})
	mustSucceed(t, s.node, up)
	name, commit := s.only(t)
	if name != tracking || commit != c || s.file(t, name, "/usr/share/hello/VERSION") != "C" {
		t.Fatalf("upgrade in place: %s (was %s) runs %s, file %q", name, tracking, commit, s.file(t, name, "/usr/share/hello/VERSION"))
	}

	// Deleting the installation removes its instances.
	var del operation.Operation
	if err := s.api.JSON(context.Background(), http.MethodDelete, "/api/v1/installations/web", nil, &del); err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, s.node, &del)
	if insts := s.instances(t); len(insts) != 0 {
		t.Fatalf("after delete: %v", insts)
	}
}

// TestIncusFailures: a package that fails to install, and a failing health
// command: the old instance keeps running, the new one is removed, and the
// operation fails with the container's output in its log.
func TestIncusFailures(t *testing.T) {
	s := newIncusSite(t)
	good := commitOf("good")
	s.publish(t, good, "main", hello(t, s.key, "1.0-r0", "good"))
	v := putInstallation(t, s.node, "web", s.spec("/bin/sh", "-c", "grep -q good /usr/share/hello/VERSION"))
	mustSucceed(t, s.node, v.LastOperation)
	old, _ := s.only(t)

	broken := apktest.BuildRepository(t, s.key, apktest.DefaultArch, apktest.Package{Name: "hello", Version: "2.0-r0",
		Depends: []string{"libmissing"}, Files: []apktest.File{{Path: "usr/share/hello/VERSION", Data: []byte("good")}}})
	s.publish(t, commitOf("broken"), "broken", broken)
	s.publish(t, commitOf("unhealthy"), "unhealthy", hello(t, s.key, "3.0-r0", "bad"))

	for _, tc := range []struct{ commit, says string }{
		{commitOf("broken"), "libmissing"},
		{commitOf("unhealthy"), "health"},
	} {
		op, err := setChannel(t, s.node, "web", map[string]string{"commit": tc.commit})
		if err != nil {
			t.Fatal(err)
		}
		op = waitOp(t, s.node, op.ID, 5*time.Minute)
		var log strings.Builder
		for _, l := range op.Log {
			log.WriteString(l.Line + "\n")
		}
		if op.State != operation.Failed || !strings.Contains(log.String()+op.Error, tc.says) {
			t.Fatalf("%s: %s %q, want a failure mentioning %q; log:\n%s", tc.commit[:7], op.State, op.Error, tc.says, log.String())
		}
		if name, commit := s.only(t); name != old || commit != good || s.file(t, name, "/usr/share/hello/VERSION") != "good" {
			t.Fatalf("after the failed change the old instance must still run: %s %s", name, commit)
		}
		// The operator fixes the channel back: it is tracked again.
		op, err = setChannel(t, s.node, "web", map[string]string{"branch": "main"})
		if err != nil {
			t.Fatal(err)
		}
		mustSucceed(t, s.node, op)
		old, _ = s.only(t)
	}
}

// TestIncusCrashResumesAndReconciles: uplink stops in the middle of a
// re-bootstrap; the next uplink on the same storage takes the operation
// over when its lease lapses and converges, leaving no orphan. Then the
// reconciler repairs an instance deleted by hand and removes one that
// belongs to no installation.
func TestIncusCrashResumesAndReconciles(t *testing.T) {
	inc := testenv.StartIncus(t)
	project := inc.NewProject(t)
	dataDir := t.TempDir()
	cfg := incusConfig(t, inc, project, dataDir)
	cfg.OperationLease = 3 * time.Second
	n := start(t, cfg)
	c0, err := instance.ConnectIncusUnix(context.Background(), inc.Socket, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &incusSite{node: n, inc: inc, project: project, c: c0.UseProject(project), key: apktest.NewKey(t)}
	a, b := commitOf("A"), commitOf("B")
	s.publish(t, a, "main", hello(t, s.key, "1.0-r0", "A"))
	s.publish(t, b, "main", hello(t, s.key, "2.0-r0", "B"))
	v := putInstallation(t, s.node, "web", s.spec())
	mustSucceed(t, s.node, v.LastOperation)

	op, err := setChannel(t, s.node, "web", map[string]string{"commit": a})
	if err != nil {
		t.Fatal(err)
	}
	// Stop uplink as soon as the new instance is being installed.
	eventually(t, 3*time.Minute, "the re-bootstrap reaches install-package", func() bool {
		var cur operation.Operation
		s.api.Get(context.Background(), "/api/v1/operations/"+op.ID, &cur)
		return len(cur.Steps) > 3 && cur.Steps[3].State != operation.StepPending
	})
	n.cancel()
	if got := len(s.instances(t)); got != 2 {
		t.Logf("at the crash: %v", s.instances(t))
	}

	cfg2 := cfg
	cfg2.ReconcileInterval = 2 * time.Second
	n2 := start(t, cfg2)
	final := mustSucceed(t, n2, op)
	if final.Attempts < 2 {
		t.Fatalf("the operation was not taken over: %d attempts", final.Attempts)
	}
	name, commit := s.only(t) // no orphan: exactly one instance, on A
	if commit != a || s.file(t, name, "/usr/share/hello/VERSION") != "A" {
		t.Fatalf("after the crash: %s runs %s", name, commit)
	}

	// Deleted by hand: the reconciler re-bootstraps it.
	if o, err := s.c.UpdateInstanceState(context.Background(), name, instance.InstanceStatePut{Action: "stop", Force: true}, ""); err == nil {
		o.WaitContext(context.Background())
	}
	if o, err := s.c.DeleteInstance(context.Background(), name); err != nil || o.WaitContext(context.Background()) != nil {
		t.Fatal(err)
	}
	// And one that belongs to no installation appears.
	inc.Launch(t, project, "ghost-1", nil)
	if _, _, err := s.c.GetInstance(context.Background(), "ghost-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.c.PatchInstance(context.Background(), "ghost-1", instance.InstancePut{Config: map[string]string{
		instance.LabelManaged: "uplink", instance.LabelInstallation: "ghost"}}, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Minute, "the reconciler converges", func() bool {
		insts := s.instances(t)
		if len(insts) != 1 {
			return false
		}
		for _, commit := range insts {
			return commit == a
		}
		return false
	})
	ops := operations(t, n2, "web")
	if ops[0].Kind != operation.KindChangeChannel || !strings.Contains(ops[0].Log[0].Line, "reconcile") {
		t.Fatalf("the repair should be a reconcile operation: %+v", ops[0])
	}
	mustSucceed(t, n2, ops[0])
	if resp, _ := get(t, n2.repo(a)+"/x86_64/APKINDEX.tar.gz"); resp.StatusCode != http.StatusOK {
		t.Fatal(resp.Status)
	}
}
