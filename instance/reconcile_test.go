package instance_test

import (
	"context"
	"strings"
	"testing"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/apktest"
)

// TestTargetVersions: an operation's target carries the version the
// target commit's index lists, per arch.
func TestTargetVersions(t *testing.T) {
	e := newEnv(t)
	e.start(&backend{}, 3)
	e.publish("A", "main", "1.0-r0")
	b := e.publish("B", "main", "2.0-r7")
	_, op, _ := e.put(instance.Channel{Branch: "main"})
	tg, err := e.svc.Target(context.Background(), op)
	if err != nil || tg.Commit != b || tg.Versions[apktest.DefaultArch] != "2.0-r7" || len(tg.Versions) != 1 {
		t.Fatalf("target %+v, %v", tg, err)
	}
}

// TestReconcileVersions: instances labelled with the right commit but
// running another version of the package than the commit lists (apk run
// by hand) are converged in place, tracked or pinned; the right versions
// leave the installation alone.
func TestReconcileVersions(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.start(&backend{}, 3)
	a := e.publish("A", "main", "1.0-r0")
	b := e.publish("B", "main", "2.0-r0")
	_, op, _ := e.put(instance.Channel{Branch: "main"})
	e.wait(op.ID)
	e.settle()

	observed := func(commit string, versions ...string) []instance.Instance {
		var out []instance.Instance
		for i, v := range versions {
			out = append(out, instance.Instance{Name: "web-1-" + string(rune('1'+i)), Commit: commit, State: "Running", Version: v, Arch: apktest.DefaultArch})
		}
		return out
	}
	reconcile := func(obs []instance.Instance) *operation.Operation {
		t.Helper()
		op, err := e.svc.Reconcile(ctx, "web", obs)
		if err != nil {
			t.Fatal(err)
		}
		if op != nil {
			e.wait(op.ID)
			e.settle()
		}
		return op
	}

	if op := reconcile(observed(b, "2.0-r0", "2.0-r0")); op != nil {
		t.Fatalf("the right versions: %s %s", op.Kind, op.Log[0].Line)
	}
	// An arch the commit has no index for is judged by the version all
	// its indexes list.
	other := observed(b, "2.0-r0", "2.0-r0")
	other[1].Arch = "riscv64"
	if op := reconcile(other); op != nil {
		t.Fatalf("another arch, the right version: %s", op.Log[0].Line)
	}

	for _, tc := range []struct {
		obs  []instance.Instance
		says string
	}{
		{observed(b, "2.0-r0", "1.0-r0"), "web-1-2 has hello 1.0-r0 installed, not 2.0-r0"},
		{observed(b, "", "2.0-r0"), "web-1-1 has no hello installed, not 2.0-r0"},
	} {
		op := reconcile(tc.obs)
		if op == nil || op.Kind != operation.KindUpgrade || op.Commit != b || !strings.Contains(op.Log[0].Line, tc.says) {
			t.Fatalf("drifted %+v: %+v", tc.obs, op)
		}
	}

	// Pinned: a drifted version is converged in place too; instances on
	// another commit are re-bootstrapped.
	e.wait(e.setChannel(instance.Channel{Commit: a}).ID)
	e.settle()
	if op := reconcile(observed(a, "1.0-r0", "2.0-r0")); op == nil || op.Kind != operation.KindUpgrade || op.To.Commit != a || op.Commit != a {
		t.Fatalf("pinned, drifted: %+v", op)
	}
	if op := reconcile(observed(b, "2.0-r0", "2.0-r0")); op == nil || op.Kind != operation.KindChangeChannel || op.Commit != a {
		t.Fatalf("pinned, on another commit: %+v", op)
	}
	if op := reconcile(observed(a, "1.0-r0", "1.0-r0")); op != nil {
		t.Fatalf("pinned, converged: %s", op.Log[0].Line)
	}
}
