package rollout

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/instance/incus"
	ops "github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/incusimage"
	"github.com/uplinkhq/uplink/internal/testenv"
)

// TestDaemonInstall runs the install step and the observer against real
// daemons, Incus 6.0 and LXD 5.0 (internal/testenv).
func TestDaemonInstall(t *testing.T) {
	for kind, start := range map[string]func(testing.TB) *testenv.Incus{"incus": testenv.StartIncus, "lxd": testenv.StartLXD} {
		t.Run(kind, func(t *testing.T) {
			d := start(t)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			c, err := incus.ConnectIncusUnix(ctx, d.Socket, &incus.ConnectionArgs{UserAgent: "uplink-test"})
			if err != nil {
				t.Fatal(err)
			}
			daemonInstall(t, ctx, d, c)
		})
	}
}

// daemonInstall runs the install step against a real instance whose apk
// is a stand-in script: one that exits 0 yet installs nothing (as
// apk-tools 2.14 does after an update that kept a stale index) must fail
// the step naming both versions and leave the labels alone; one that
// installs gets the instance labelled with what its database says. The
// observer reads the database, not the labels.
func daemonInstall(t *testing.T, ctx context.Context, d *testenv.Incus, c *incus.ProtocolIncus) {
	project := d.NewProject(t)
	pc := c.UseProject(project)
	name := testenv.UniqueName("inst")
	d.Launch(t, project, name, nil)
	installation := "web-" + name
	if err := pc.PatchInstance(ctx, name, incus.InstancePut{Config: map[string]string{LabelManaged: managedBy, LabelInstallation: installation,
		LabelCommit: "c1", LabelPackage: "hello", LabelVersion: "1.0-r0"}}, ""); err != nil {
		t.Fatal(err)
	}
	push := func(path, content string, mode int) {
		t.Helper()
		if err := pc.CreateInstanceFile(ctx, name, path, incus.InstanceFileArgs{Content: strings.NewReader(content), Mode: mode}); err != nil {
			t.Fatalf("push %s: %v", path, err)
		}
	}
	for _, dir := range []string{"/usr/local", "/usr/local/bin"} {
		if err := pc.CreateInstanceFile(ctx, name, dir, incus.InstanceFileArgs{Type: "directory", Mode: 0o755}); err != nil {
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
	b := NewBackend(BackendConfig{Incus: InProjects(c), HealthTimeout: 3 * time.Second})
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
	o := &Observer{Incus: InProjects(c)}
	push("/lib/apk/db/installed", db("1.5-r0"), 0o644)
	obs := o.Observe(ctx, project, []string{installation})[installation]
	if len(obs) != 1 || obs[0].Version != "1.5-r0" || obs[0].Commit != "c1" || obs[0].Arch != arch || obs[0].State != "Running" {
		t.Fatalf("observed %+v", obs)
	}

	// An apk that installs what it is asked for; without /etc/apk/arch
	// the arch is Incus's.
	push("/usr/local/bin/apk", `#!/bin/sh
case "$1" in
add) v="${2#hello=}"; printf 'P:hello\nV:%s\n\n' "$v" >/lib/apk/db/installed; echo "(1/1) Installing hello ($v)";;
esac
`, 0o755)
	if code, err := pc.ExecInstance(ctx, name, incus.InstanceExecPost{Command: []string{"rm", "-f", "/etc/apk/arch"}}, nil); err != nil || code != 0 {
		t.Fatalf("rm /etc/apk/arch: %d %v", code, err)
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
