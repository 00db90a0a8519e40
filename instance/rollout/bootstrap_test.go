package rollout

import (
	"slices"
	"strings"
	"testing"

	ops "github.com/uplinkhq/uplink/instance/operation"
)

func TestRepositoriesKeepsTheImagesLines(t *testing.T) {
	cur := "https://dl-cdn.alpinelinux.org/alpine/v3.20/main\n# a comment\nhttp://uplink:4080/distribution/main/acme/hello\nhttp://uplink:4080/distribution/main/acme/other\n"
	got := repositories(cur, "acme/hello", "http://uplink:4080/distribution/0123abc/acme/hello")
	want := "https://dl-cdn.alpinelinux.org/alpine/v3.20/main\n# a comment\nhttp://uplink:4080/distribution/main/acme/other\nhttp://uplink:4080/distribution/0123abc/acme/hello\n"
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if got := repositories("", "acme/hello", "http://u/distribution/main/acme/hello"); got != "http://u/distribution/main/acme/hello\n" {
		t.Fatalf("empty file: %q", got)
	}
}

func TestStepsAndNames(t *testing.T) {
	b := NewBackend(BackendConfig{})
	op := &ops.Operation{ID: "web.12", Installation: "web", Kind: ops.KindChangeChannel}
	steps := b.Steps(op, ops.Target{Count: 2})
	if len(steps) != 2*len(ops.BootstrapSteps)+1 || steps[0] != "create-instance-1" || steps[len(ops.BootstrapSteps)] != "create-instance-2" {
		t.Fatalf("steps: %v", steps)
	}
	if a, i := ops.SplitStep("remove-old-instance-2"); a != ops.StepRemoveOldInstance || i != 2 {
		t.Fatalf("step: %s %d", a, i)
	}
	if n := newName(op, 2); n != "web-12-2" {
		t.Fatalf("name %s", n)
	}
	if d, ok := (&Backend{cfg: BackendConfig{ProxyConnect: "tcp:127.0.0.1:9999"}}).proxyDevice("http://127.0.0.1:4080/distribution/main/acme/hello"); !ok || d["listen"] != "tcp:127.0.0.1:4080" || d["connect"] != "tcp:127.0.0.1:9999" {
		t.Fatalf("proxy device: %v", d)
	}
	if s := (&Backend{}).source("0123456789abcdef"); s.Fingerprint == "" {
		t.Fatalf("fingerprint source: %+v", s)
	}
	if s := (&Backend{}).source("alpine/3.20"); s.Alias != "alpine/3.20" {
		t.Fatalf("alias source: %+v", s)
	}
}

// TestEveryStepRuns: the backend runs every step ops.InstanceSteps
// names, and has no step it never names.
func TestEveryStepRuns(t *testing.T) {
	named := map[string]bool{}
	for _, kind := range []ops.Kind{ops.KindChangeChannel, ops.KindUpgrade, ops.KindDelete} {
		for _, n := range []int{1, 3} {
			for _, s := range ops.InstanceSteps(&ops.Operation{ID: "web.3", Installation: "web", Kind: kind}, ops.Target{Count: n}) {
				action, _ := ops.SplitStep(s)
				if _, ok := stepFuncs[action]; !ok {
					t.Errorf("%s: step %s has no function", kind, s)
				}
				named[action] = true
			}
		}
	}
	for action := range stepFuncs {
		if !named[action] {
			t.Errorf("the backend runs %s, which no operation names", action)
		}
	}
	err := NewBackend(BackendConfig{Incus: projectsOf()}).Do(testCtx(t), "launch-rocket-1", &ops.Operation{ID: "web.3"}, ops.Target{}, func(string) {})
	if err == nil || !strings.Contains(err.Error(), "unknown step") {
		t.Errorf("an unknown step: %v", err)
	}
}

// TestNoBackendShowsTheRealSteps: without Incus, an operation records
// the steps this backend would run.
func TestNoBackendShowsTheRealSteps(t *testing.T) {
	b := NewBackend(BackendConfig{})
	for _, kind := range []ops.Kind{ops.KindChangeChannel, ops.KindUpgrade, ops.KindDelete} {
		op := &ops.Operation{ID: "web.3", Installation: "web", Kind: kind}
		tg := ops.Target{Count: 3}
		if got, want := (ops.NoBackend{}).Steps(op, tg), b.Steps(op, tg); !slices.Equal(got, want) {
			t.Errorf("%s: NoBackend %v, Incus %v", kind, got, want)
		}
	}
}

func TestFindVersion(t *testing.T) {
	db := "C:Q1abc=\nP:busybox\nV:1.36.1-r29\nA:x86_64\np:" + strings.Repeat("cmd:x ", 20000) + "\n\n" +
		"C:Q1def=\nP:hello\nV:1.0-r1\nA:noarch\nF:usr/share/hello\nR:VERSION\n\n" +
		"P:hello-doc\nV:9.9-r9\n"
	for pkg, want := range map[string]string{"hello": "1.0-r1", "busybox": "1.36.1-r29", "hello-doc": "9.9-r9", "hell": "", "missing": ""} {
		got, err := findVersion(strings.NewReader(db), pkg)
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", pkg, got, err, want)
		}
	}
}

func TestTargetVersion(t *testing.T) {
	tg := ops.Target{Versions: map[string]string{"x86_64": "2.0-r0", "aarch64": "2.0-r1"}}
	for arch, want := range map[string]string{"x86_64": "2.0-r0", "aarch64": "2.0-r1", "armv7": ""} {
		if got, _ := tg.Version(arch); got != want {
			t.Errorf("%s: %q, want %q", arch, got, want)
		}
	}
	tg.Versions = map[string]string{"x86_64": "2.0-r0", "aarch64": "2.0-r0"}
	if got, ok := tg.Version("armv7"); !ok || got != "2.0-r0" {
		t.Errorf("agreeing indexes: %q %v", got, ok)
	}
	if _, ok := (ops.Target{}).Version("x86_64"); ok {
		t.Error("no versions known, yet one was chosen")
	}
	if apkArch("i686") != "x86" || apkArch("x86_64") != "x86_64" || apkArch("armv7l") != "armv7" {
		t.Error("apkArch")
	}
}
