package retention

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/ref"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	// c<n> was published n days ago: newest first, as Builds lists them.
	build := func(n int, branch string) ref.Build {
		return ref.Build{Commit: fmt.Sprintf("c%d", n), Branch: branch, PublishedAt: now.Add(-time.Duration(n) * day)}
	}
	builds := []ref.Build{
		build(1, "main"), build(2, "main"), build(3, "main"), build(4, "dev"),
		build(5, "main"), build(6, "dev"), build(7, "dev"), build(8, ""), build(9, ""), build(10, "gone"),
	}
	f := Facts{
		Builds: builds,
		// c5 moved dev too (published to main first, then to dev).
		Branches: map[string][]string{"main": {"c1", "c2", "c3", "c5"}, "dev": {"c4", "c5", "c6", "c7"}},
		Used: map[string][]string{
			"c9": {"installation web (pinned)"},
			"c7": {"tag v1"},
		},
		Now: now,
	}
	pol := Policy{KeepBuilds: 2, KeepAge: 36 * time.Hour}
	want := map[string]string{
		"c1":  "younger than 36h0m0s",
		"c2":  "among the last 2 builds of branch main",
		"c3":  "",
		"c4":  "among the last 2 builds of branch dev",
		"c5":  "among the last 2 builds of branch dev",
		"c6":  "",
		"c7":  "used by tag v1",
		"c8":  "among the last 2 builds of no branch",
		"c9":  "used by installation web (pinned)",
		"c10": "among the last 2 builds of branch gone",
	}
	got := Decide(pol, f)
	if len(got) != len(builds) {
		t.Fatalf("%d decisions for %d builds", len(got), len(builds))
	}
	for i, d := range got {
		c := d.Build.Commit
		if c != builds[i].Commit {
			t.Fatalf("decision %d is of %s, want %s (the order of the builds)", i, c, builds[i].Commit)
		}
		w := want[c]
		if d.Keep != (w != "") {
			t.Errorf("%s: keep=%v (%s), want keep=%v", c, d.Keep, d.Why, w != "")
			continue
		}
		if w != "" && d.Why != w && !(c == "c1" && strings.HasPrefix(d.Why, "among")) {
			t.Errorf("%s: kept because %q, want %q", c, d.Why, w)
		}
		if w == "" && !strings.Contains(d.Why, "used by nothing") {
			t.Errorf("%s: deleted because %q", c, d.Why)
		}
	}
}

func TestDecideUsedOverridesZeroPolicy(t *testing.T) {
	now := time.Now()
	old := now.Add(-1000 * time.Hour)
	f := Facts{
		Builds: []ref.Build{{Commit: "a", Branch: "main", PublishedAt: old}, {Commit: "b", Branch: "main", PublishedAt: old}},
		Used:   map[string][]string{"b": {"installation db (runs it)"}},
		Now:    now,
	}
	got := Decide(Policy{}, f)
	if got[0].Keep || !got[1].Keep {
		t.Fatalf("keep nothing but what is used: got %+v", got)
	}
}

func TestPolicyOver(t *testing.T) {
	n, age := 0, time.Hour
	p := Default.Over(distribution.RetentionSettings{KeepBuilds: &n, KeepAge: &age})
	if p.KeepBuilds != 0 || p.KeepAge != time.Hour || p.KeepOperations != DefaultKeepOperations {
		t.Fatalf("Over: %+v", p)
	}
}
