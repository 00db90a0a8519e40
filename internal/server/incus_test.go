package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/incus"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/instance/rollout"
	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/server"
	"github.com/uplinkhq/uplink/internal/testenv"
)

// incusSite is an uplink whose instance backend is a real Incus daemon:
// instances reach uplink's distribution listener through a proxy device,
// and install with a real APK client (go-apk) inside the container.
type incusSite struct {
	*node
	inc     *testenv.Incus
	project string
	c       *incus.ProtocolIncus
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
	c, err := incus.ConnectIncusUnix(context.Background(), inc.Socket, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &incusSite{node: n, inc: inc, project: project, c: c.UseProject(project), key: apktest.NewKey(t)}
}

func (s *incusSite) spec(health ...string) instance.Spec {
	sp := webSpec(s.key, instance.Channel{Branch: "main"})
	sp.Instances = instance.Instances{Count: 1, Image: s.inc.ImageAlias}
	sp.HealthCommand = health
	return sp
}

// instances lists the project's instances: name → commit label.
func (s *incusSite) instances(t *testing.T) map[string]string {
	t.Helper()
	list, err := s.c.GetInstancesWithFilter(context.Background(), incus.InstanceTypeContainer, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, in := range list {
		if in.Status != "Running" {
			out[in.Name] = "not running: " + in.Status
			continue
		}
		out[in.Name] = in.Config[rollout.LabelCommit]
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

// version is the version of package hello that an instance's apk
// database lists: what apk itself would report, whatever the labels say.
func (s *incusSite) version(t *testing.T, inst string) string {
	t.Helper()
	db := s.file(t, inst, "/lib/apk/db/installed")
	for _, stanza := range strings.Split(db, "\n\n") {
		lines := strings.Split(strings.TrimSpace(stanza), "\n")
		if slices.Contains(lines, "P:hello") {
			for _, l := range lines {
				if v, ok := strings.CutPrefix(l, "V:"); ok {
					return v
				}
			}
		}
	}
	return ""
}

// runs checks that inst runs version of hello (its apk database), with
// the VERSION file content, and that its labels say so.
func (s *incusSite) runs(t *testing.T, inst, commit, version, content string) {
	t.Helper()
	in, _, err := s.c.GetInstance(context.Background(), inst)
	if err != nil {
		t.Fatal(err)
	}
	got, file := s.version(t, inst), s.file(t, inst, "/usr/share/hello/VERSION")
	if got != version || file != content || in.Status != "Running" || in.Config[rollout.LabelCommit] != commit || in.Config[rollout.LabelVersion] != version {
		t.Fatalf("%s: apk database has hello %q, VERSION %q, %s, labels commit %.7s version %q; want hello %s, %q, commit %.7s",
			inst, got, file, in.Status, in.Config[rollout.LabelCommit], in.Config[rollout.LabelVersion], version, content, commit)
	}
}

// logShows checks that an operation's log has each line part.
func logShows(t *testing.T, op *operation.Operation, parts ...string) {
	t.Helper()
	var log strings.Builder
	for _, l := range op.Log {
		log.WriteString(l.Line + "\n")
	}
	for _, p := range parts {
		if !strings.Contains(log.String(), p) {
			t.Fatalf("the log of %s lacks %q:\n%s", op.ID, p, log.String())
		}
	}
}

// fetchLine is the line apk prints when it downloads ref's index.
func (s *incusSite) fetchLine(ref string) string {
	return "fetch " + s.cfg.DistributionURL + "/distribution/" + ref + "/" + testApp + "/" + apktest.DefaultArch + "/APKINDEX.tar.gz"
}

// TestIncusMission is the whole mission on a real daemon: track main
// (the container installs B), pin to A (a fresh container installs A, the
// old one is gone), track main again (B), publish C (upgraded in place
// seconds after the last index fetch), publish B again (downgraded in
// place), change to a branch signed by another key (refused before any
// instance is touched; publishes there change nothing). Every step is
// checked in the container's apk database, not only in its labels.
func TestIncusMission(t *testing.T) { mission(t, newIncusSite(t)) }

// TestLXDMission runs the same on LXD 5.0 (no create-and-start, other
// exec output paths): the client's dialect switch.
func TestLXDMission(t *testing.T) { mission(t, newIncusSite(t, testenv.StartLXD)) }

func mission(t *testing.T, s *incusSite) {
	ctx := context.Background()
	a, b, c := commitOf("A"), commitOf("B"), commitOf("C")
	s.publish(t, a, "main", hello(t, s.key, "1.0-r0", "A"))
	s.publish(t, b, "main", hello(t, s.key, "2.0-r0", "B"))

	v := putInstallation(t, s.node, "web", s.spec())
	op := mustSucceed(t, s.node, v.LastOperation)
	first, _ := s.only(t)
	s.runs(t, first, b, "2.0-r0", "B")
	logShows(t, op, s.fetchLine("main"), "(1/1) Installing hello (2.0-r0)", "OK: ", first+": hello 2.0-r0 installed")
	if repos := s.file(t, first, "/etc/apk/repositories"); !strings.Contains(repos, "/distribution/main/"+testApp) {
		t.Fatalf("repositories: %q", repos)
	}
	v = getInstallation(t, s.node, "web")
	if len(v.Observed) != 1 || v.Observed[0].Name != first || v.Observed[0].Commit != b || v.Observed[0].State != "Running" || v.Observed[0].Version != "2.0-r0" {
		t.Fatalf("observed: %+v", v.Observed)
	}

	// Pinned to an older commit: a fresh instance installs the older version.
	op, err := setChannel(t, s.node, "web", map[string]string{"commit": a[:10]})
	if err != nil {
		t.Fatal(err)
	}
	op = mustSucceed(t, s.node, op)
	pinned, _ := s.only(t)
	if pinned == first {
		t.Fatalf("pinned: %s was not replaced", first)
	}
	s.runs(t, pinned, a, "1.0-r0", "A")
	logShows(t, op, s.fetchLine(a), "(1/1) Installing hello (1.0-r0)", pinned+": hello 1.0-r0 installed")
	if repos := s.file(t, pinned, "/etc/apk/repositories"); !strings.Contains(repos, "/distribution/"+a+"/"+testApp) {
		t.Fatalf("pinned repositories: %q", repos)
	}

	op, err = setChannel(t, s.node, "web", map[string]string{"branch": "main"})
	if err != nil {
		t.Fatal(err)
	}
	op = mustSucceed(t, s.node, op)
	tracking, _ := s.only(t)
	s.runs(t, tracking, b, "2.0-r0", "B")
	var fetched time.Time // when the instance last fetched main's index
	for _, st := range op.Steps {
		if st.Name == "install-package-1" && st.FinishedAt != nil {
			fetched = *st.FinishedAt
		}
	}

	// Published within a minute of that fetch: apk-tools 2.14's plain
	// update (4 h) and even -U (60 s) would keep the old index, and
	// add --upgrade would then install nothing new.
	s.publish(t, c, "main", hello(t, s.key, "3.0-r0", "C"))
	up := s.nextUpgrade(t, op.ID)
	up = mustSucceed(t, s.node, up)
	if up.StartedAt == nil || up.StartedAt.Sub(fetched) >= time.Minute {
		t.Fatalf("the upgrade started %v after main's index was fetched; this test needs less than a minute", up.StartedAt.Sub(fetched))
	}
	name, _ := s.only(t)
	if name != tracking {
		t.Fatalf("upgrade in place: %s replaced %s", name, tracking)
	}
	s.runs(t, name, c, "3.0-r0", "C")
	logShows(t, up, s.fetchLine("main"), "(1/1) Upgrading hello (2.0-r0 -> 3.0-r0)", name+": hello 3.0-r0 installed")

	// The branch is moved back to B (a force-push): the instance is
	// downgraded in place, which add --upgrade never does.
	if _, err := s.api.Publish(ctx, testApp, api.PublishRequest{Commit: b, Branch: "main", Message: "revert"}); err != nil {
		t.Fatal(err)
	}
	down := mustSucceed(t, s.node, s.nextUpgrade(t, up.ID))
	if name, _ = s.only(t); name != tracking || down.Commit != b {
		t.Fatalf("downgrade in place: %s (was %s), operation to %.7s", name, tracking, down.Commit)
	}
	s.runs(t, name, b, "2.0-r0", "B")
	logShows(t, down, s.fetchLine("main"), "(1/1) Downgrading hello (3.0-r0 -> 2.0-r0)", name+": hello 2.0-r0 installed")

	// A branch whose index another key signed: the instances' apk would
	// refuse it, so the change fails at verify-package and no instance is
	// created or touched.
	other := apktest.GenerateKey(t)
	s.publish(t, commitOf("D"), "evil", hello(t, other, "4.0-r0", "D"))
	op, err = setChannel(t, s.node, "web", map[string]string{"branch": "evil"})
	if err != nil {
		t.Fatal(err)
	}
	op = waitOp(t, s.node, op.ID, 5*time.Minute)
	if op.State != operation.Failed || op.Steps[0].Name != instance.VerifyStep || op.Steps[0].State != operation.StepFailed ||
		op.Steps[1].State != operation.StepPending || !strings.Contains(op.Error, other.Name) || !strings.Contains(op.Error, s.key.Name) {
		t.Fatalf("change to a commit signed by another key: %s %q, steps %+v", op.State, op.Error, op.Steps)
	}
	if name, _ = s.only(t); name != tracking {
		t.Fatalf("after the refused change: %s, want %s untouched", name, tracking)
	}
	s.runs(t, name, b, "2.0-r0", "B")
	if v = getInstallation(t, s.node, "web"); v.Channel.Branch != "main" || v.ResolvedCommit != b {
		t.Fatalf("after the refused change the installation says %+v on %.7s", v.Channel, v.ResolvedCommit)
	}
	// A publish to the branch that was only a failed attempt upgrades nothing.
	s.publish(t, commitOf("E"), "evil", hello(t, s.key, "5.0-r0", "E"))
	time.Sleep(3 * time.Second)
	if ops := operations(t, s.node, "web"); ops[0].ID != op.ID {
		t.Fatalf("a publish to the failed branch started %s (%s)", ops[0].ID, ops[0].Kind)
	}
	s.runs(t, name, b, "2.0-r0", "B")

	// Deleting the installation removes its instances.
	var del operation.Operation
	if err := s.api.JSON(ctx, http.MethodDelete, "/api/v1/installations/web", nil, &del); err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, s.node, &del)
	if insts := s.instances(t); len(insts) != 0 {
		t.Fatalf("after delete: %v", insts)
	}
}

// nextUpgrade waits for the upgrade that follows operation after.
func (s *incusSite) nextUpgrade(t *testing.T, after string) *operation.Operation {
	t.Helper()
	var up *operation.Operation
	eventually(t, 10*time.Second, "an upgrade starts", func() bool {
		if ops := operations(t, s.node, "web"); ops[0].Kind == operation.KindUpgrade && ops[0].ID != after {
			up = ops[0]
		}
		return up != nil
	})
	return up
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
	c0, err := incus.ConnectIncusUnix(context.Background(), inc.Socket, nil)
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
	// How many replicas took it on is not part of the API; the log says.
	if !slices.ContainsFunc(final.Log, func(l operation.LogLine) bool { return strings.HasPrefix(l.Line, "taken over by ") }) {
		t.Fatalf("the operation was not taken over: %+v", final.Log)
	}
	name, commit := s.only(t) // no orphan: exactly one instance, on A
	if commit != a || s.file(t, name, "/usr/share/hello/VERSION") != "A" {
		t.Fatalf("after the crash: %s runs %s", name, commit)
	}

	// Deleted by hand: the reconciler re-bootstraps it.
	if o, err := s.c.UpdateInstanceState(context.Background(), name, incus.InstanceStatePut{Action: "stop", Force: true}, ""); err == nil {
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
	if err := s.c.PatchInstance(context.Background(), "ghost-1", incus.InstancePut{Config: map[string]string{
		rollout.LabelManaged: "uplink", rollout.LabelInstallation: "ghost"}}, ""); err != nil {
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
	repair := mustSucceed(t, n2, ops[0])
	if resp, _ := get(t, n2.repo(a)+"/x86_64/APKINDEX.tar.gz"); resp.StatusCode != http.StatusOK {
		t.Fatal(resp.Status)
	}

	// Someone installs another version by hand: the labels still say A,
	// the apk database does not, and the reconciler converges it in place.
	name, _ = s.only(t)
	res := inc.Exec(t, project, name, "apk", "add", "-X", cfg.DistributionURL+"/distribution/main/"+testApp, "hello=2.0-r0")
	if res.Return != 0 || s.version(t, name) != "2.0-r0" {
		t.Fatalf("apk add hello=2.0-r0 by hand: %d %s%s", res.Return, res.Stdout, res.Stderr)
	}
	var fix *operation.Operation
	eventually(t, 2*time.Minute, "the reconciler sees the drifted version", func() bool {
		if ops := operations(t, n2, "web"); ops[0].ID != repair.ID {
			fix = ops[0]
		}
		return fix != nil
	})
	fix = mustSucceed(t, n2, fix)
	if fix.Kind != operation.KindUpgrade || fix.Commit != a {
		t.Fatalf("the repair of a drifted version: %s to %.7s", fix.Kind, fix.Commit)
	}
	logShows(t, fix, "reconcile: ", name+" has hello 2.0-r0 installed, not 1.0-r0", "(1/1) Downgrading hello (2.0-r0 -> 1.0-r0)", name+": hello 1.0-r0 installed")
	if again, _ := s.only(t); again != name {
		t.Fatalf("the repair replaced %s by %s", name, again)
	}
	s.runs(t, name, a, "1.0-r0", "A")
}
