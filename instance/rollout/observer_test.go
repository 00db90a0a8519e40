package rollout

import (
	"errors"
	"slices"
	"testing"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/incus"
)

func labelled(name, installation, commit, pkg, version, status string) incus.Instance {
	return incus.Instance{Name: name, Status: status, InstancePut: incus.InstancePut{Architecture: "x86_64", Config: map[string]string{
		LabelManaged: managedBy, LabelInstallation: installation, LabelCommit: commit, LabelPackage: pkg, LabelVersion: version,
	}}}
}

// The observer lists a project's instances once for all its
// installations, reads the installed version of the running ones from
// their apk database (the label's stands where there is none) and gives
// every installation asked for a list, empty when Incus fails.
func TestObserve(t *testing.T) {
	acme := &fakeIncus{project: "acme", instances: []incus.Instance{
		labelled("web-2-1", "web", "c1", "hello", "1.0-r0", "Running"),
		labelled("web-1-1", "web", "c1", "hello", "1.0-r0", "Running"),
		labelled("db-1-1", "db", "c2", "pg", "16-r0", "Stopped"),
		labelled("old-1-1", "gone", "c0", "hello", "0.9-r0", "Running"),
	}, files: map[string]string{
		"web-1-1:" + installedDB: "P:hello\nV:1.5-r0\n\n",
		"web-2-1:" + installedDB: unreadable,
		"db-1-1:" + installedDB:  "P:pg\nV:17-r0\n\n",
	}}
	broken := &fakeIncus{project: "broken", err: errors.New("connection refused")}
	o := &Observer{Incus: projectsOf(acme, broken)}
	got := o.Observe(testCtx(t), "acme", []string{"web", "db", "empty"})
	want := map[string][]instance.Instance{
		"web": {
			{Name: "web-1-1", Commit: "c1", State: "Running", Version: "1.5-r0", Arch: "x86_64"},
			{Name: "web-2-1", Commit: "c1", State: "Running", Version: "1.0-r0", Arch: "x86_64"},
		},
		"db":    {{Name: "db-1-1", Commit: "c2", State: "Stopped", Version: "16-r0", Arch: "x86_64"}},
		"empty": {},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for name, w := range want {
		if !slices.Equal(got[name], w) || got[name] == nil {
			t.Errorf("%s: %+v, want %+v", name, got[name], w)
		}
	}
	if n := acme.count("list"); n != 1 {
		t.Errorf("%d lists for one project", n)
	}
	if acme.count("file old-1-1") != 0 || acme.count("file db-1-1") != 0 {
		t.Errorf("read the database of an instance not asked for, or not running: %v", acme.calls)
	}
	if got := o.Observe(testCtx(t), "broken", []string{"web"}); got["web"] == nil || len(got["web"]) != 0 {
		t.Errorf("a failed list: %v", got)
	}
}
