package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
)

// retInstall creates an installation on channel and waits for its
// bootstrap (no instance backend: the steps are recorded, nothing runs).
func retInstall(t *testing.T, n *node, key apktest.Key, name string, ch instance.Channel) {
	t.Helper()
	v := putInstallation(t, n, name, webSpec(key, ch))
	if op := waitOp(t, n, v.LastOperation.ID, 10*time.Second); op.State != operation.Succeeded {
		t.Fatalf("bootstrap of %s: %s %s", name, op.State, op.Error)
	}
}

func retMove(t *testing.T, n *node, name string, ch map[string]string) {
	t.Helper()
	op, err := setChannel(t, n, name, ch)
	if err != nil {
		t.Fatal(err)
	}
	if op = waitOp(t, n, op.ID, 10*time.Second); op.State != operation.Succeeded {
		t.Fatalf("moving %s to %v: %s %s", name, ch, op.State, op.Error)
	}
}

// retInUse checks err is a 409 in_use whose used_by holds want.
func retInUse(t *testing.T, what string, err error, want string) {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusConflict || ce.Code != api.CodeInUse {
		t.Fatalf("%s: %v, want 409 in_use", what, err)
	}
	if !strings.Contains(ce.Message, want) {
		t.Fatalf("%s: message %q does not name %q", what, ce.Message, want)
	}
}

func retStatus(t *testing.T, what string, err error, status int) {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != status {
		t.Fatalf("%s: %v, want %d", what, err, status)
	}
}

func retCommits(t *testing.T, n *node, branch string) []string {
	t.Helper()
	builds, err := n.api.Builds(context.Background(), testApp, branch, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range builds {
		out = append(out, b.Commit)
	}
	return out
}

// TestRetention, on real S3 with the artifact cache in front: a policy
// run deletes exactly what its dry run lists, never a commit pinned, run,
// named or recently operated on; what it deleted answers 404 through
// the whole distribution chain; deletes of what is in use are refused.
func TestRetention(t *testing.T) {
	cfg := opsConfig(s3Config(t, baseConfig(t)))
	cfg.ArtifactCacheSize = 64 << 20
	cfg.KeepBuilds, cfg.KeepAge, cfg.KeepOperations = 50, 720*time.Hour, 10
	n := start(t, cfg)
	ctx := context.Background()
	key := apktest.NewKey(t)
	c := map[string]string{}
	for i, label := range []string{"A", "F", "B", "G", "C", "D", "H", "I"} {
		c[label] = commitOf("retention " + label)
		branch := "main"
		if label == "H" || label == "I" {
			branch = "feature/x"
		}
		var tags []string
		if label == "B" {
			tags = []string{"v1"}
		}
		n.publish(t, c[label], branch, hello(t, key, string(rune('1'+i))+".0-r0", label), tags...)
	}
	// old is pinned to A; tagged pins tag v1 (B); web tracks main and
	// was last moved from C back to main (its last operation's origin).
	retInstall(t, n, key, "old", instance.Channel{Commit: c["A"]})
	retInstall(t, n, key, "tagged", instance.Channel{Tag: "v1"})
	retInstall(t, n, key, "web", instance.Channel{Branch: "main"})
	retMove(t, n, "web", map[string]string{"commit": c["C"]})
	retMove(t, n, "web", map[string]string{"branch": "main"})

	// Warm every cache with G, which the policy will delete.
	gIndex, gPkg := n.repo(c["G"])+"/x86_64/APKINDEX.tar.gz", n.repo(c["G"])+"/x86_64/hello-4.0-r0.apk"
	for _, u := range []string{gIndex, gPkg, gPkg} {
		if resp, _ := get(t, u); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s before the prune: %d", u, resp.StatusCode)
		}
	}

	// The server's default keeps everything (younger than 720h).
	rep, err := n.api.Prune(ctx, testApp, true)
	if err != nil || len(rep.Deleted) != 0 || rep.Kept != 8 {
		t.Fatalf("dry run under the default policy: %+v %v, want nothing deleted, 8 kept", rep, err)
	}
	body := []byte(`{"retention":{"keep_builds":1,"keep_age":"0s","keep_operations":1}}`)
	if r := admAuthed(t, http.MethodPatch, admAdmin(n)+"/api/v1/apps/"+testApp, body); r.status != http.StatusOK ||
		!strings.Contains(string(r.body), `"keep_age":"0s"`) {
		t.Fatalf("PATCH retention: %d %s", r.status, r.body)
	}
	if r := admAuthed(t, http.MethodPatch, admAdmin(n)+"/api/v1/apps/"+testApp, []byte(`{"retention":{"keep_age":"soon"}}`)); r.status != http.StatusBadRequest {
		t.Fatalf("PATCH a bad keep_age: %d %s, want 400", r.status, r.body)
	}

	want := []string{c["H"], c["G"], c["F"]} // newest first
	dry, err := n.api.Prune(ctx, testApp, true)
	if err != nil {
		t.Fatal(err)
	}
	var dryCommits []string
	for _, d := range dry.Deleted {
		dryCommits = append(dryCommits, d.Commit)
		if d.Bytes <= 0 || d.Reason == "" || d.PublishedAt.IsZero() {
			t.Errorf("dry run entry without bytes, reason or time: %+v", d)
		}
	}
	if !dry.DryRun || !slices.Equal(dryCommits, want) || dry.Kept != 5 {
		t.Fatalf("dry run: deleted %v kept %d, want %v (H G F) and 5 kept", dryCommits, dry.Kept, want)
	}
	if got := retCommits(t, n, ""); len(got) != 8 {
		t.Fatalf("a dry run deleted something: %d builds left", len(got))
	}

	real, err := n.api.Prune(ctx, testApp, false)
	if err != nil {
		t.Fatal(err)
	}
	var realCommits []string
	for _, d := range real.Deleted {
		realCommits = append(realCommits, d.Commit)
	}
	if real.DryRun || !slices.Equal(realCommits, dryCommits) || real.Bytes != dry.Bytes || real.Kept != dry.Kept {
		t.Fatalf("real run: %+v, the dry run said %+v", real, dry)
	}
	left := retCommits(t, n, "")
	for _, l := range []string{"A", "B", "C", "D", "I"} {
		if !slices.Contains(left, c[l]) {
			t.Errorf("%s (%s) was deleted: pinned, tagged, recently operated or a head", l, c[l])
		}
	}
	for _, gone := range want {
		if slices.Contains(left, gone) {
			t.Errorf("%s still listed after the prune", gone)
		}
	}
	if main := retCommits(t, n, "main"); slices.Contains(main, c["F"]) || slices.Contains(main, c["G"]) {
		t.Errorf("main's history still holds a pruned commit: %v", main)
	}
	for _, u := range []string{gIndex, gPkg, n.repo(c["G"][:10]) + "/x86_64/APKINDEX.tar.gz"} {
		if resp, _ := get(t, u); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s after the prune: %d, want 404", u, resp.StatusCode)
		}
	}
	if again, err := n.api.Prune(ctx, testApp, true); err != nil || len(again.Deleted) != 0 {
		t.Fatalf("a second dry run: %+v %v, want nothing left to delete", again, err)
	}
	metrics := string(admAuthed(t, http.MethodGet, admAdmin(n)+"/metrics", nil).body)
	for _, m := range []string{`uplink_retention_builds_deleted_total 3`, `uplink_retention_runs_total{result="ok"} 1`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %q", m)
		}
	}
	if !regexp.MustCompile(`uplink_retention_bytes_deleted_total [1-9]`).MatchString(metrics) {
		t.Errorf("no bytes counted as deleted")
	}

	// Deletes of what is in use are refused, naming the user.
	retInUse(t, "DELETE build A", n.api.DeleteBuild(ctx, testApp, c["A"]), "installation old (pinned)")
	retInUse(t, "DELETE build B", n.api.DeleteBuild(ctx, testApp, c["B"][:9]), "tag v1")
	retInUse(t, "DELETE build D", n.api.DeleteBuild(ctx, testApp, c["D"]), "branch main")
	retInUse(t, "DELETE branch main", n.api.DeleteBranch(ctx, testApp, "main"), "installation web")
	retInUse(t, "DELETE tag v1", n.api.DeleteTag(ctx, testApp, "v1"), "installation tagged")
	r := admAuthed(t, http.MethodDelete, admAdmin(n)+"/api/v1/apps/"+testApp+"/builds/"+c["A"], nil)
	var e struct {
		Error api.Error `json:"error"`
	}
	if json.Unmarshal(r.body, &e) != nil || !slices.Contains(e.Error.UsedBy, "installation old (pinned)") {
		t.Fatalf("409 in_use without used_by: %s", r.body)
	}
	retStatus(t, "DELETE a pruned build", n.api.DeleteBuild(ctx, testApp, c["G"]), http.StatusNotFound)

	// Tags: created, moved, refused, deleted.
	for _, step := range []struct {
		tag, commit string
		status      int
	}{{"v2", c["D"], http.StatusCreated}, {"v2", c["D"], http.StatusOK}, {"v2", c["C"][:8], http.StatusOK},
		{"v3", c["G"], http.StatusNotFound}, {"-bad", c["D"], http.StatusBadRequest}} {
		r := admAuthed(t, http.MethodPut, admAdmin(n)+"/api/v1/apps/"+testApp+"/tags/"+step.tag, []byte(`{"commit":"`+step.commit+`"}`))
		if r.status != step.status {
			t.Fatalf("PUT tag %s at %s: %d %s, want %d", step.tag, step.commit, r.status, r.body, step.status)
		}
	}
	refs, err := n.api.Refs(ctx, testApp)
	if err != nil || refs.Tags["v2"].Commit != c["C"] {
		t.Fatalf("tag v2: %+v %v, want at C", refs.Tags, err)
	}
	if err := n.api.SetTag(ctx, testApp, "v2", c["I"]); err != nil {
		t.Fatal(err)
	}
	if err := n.api.DeleteTag(ctx, testApp, "v2"); err != nil {
		t.Fatal(err)
	}
	retStatus(t, "DELETE tag v2 again", n.api.DeleteTag(ctx, testApp, "v2"), http.StatusNotFound)

	// A branch nobody tracks goes, its builds stay; then its head can go.
	if err := n.api.DeleteBranch(ctx, testApp, "feature/x"); err != nil {
		t.Fatal(err)
	}
	retStatus(t, "DELETE branch feature/x again", n.api.DeleteBranch(ctx, testApp, "feature/x"), http.StatusNotFound)
	if !slices.Contains(retCommits(t, n, ""), c["I"]) {
		t.Fatal("deleting a branch deleted its build")
	}
	if resp, _ := get(t, n.repo("feature/x")+"/x86_64/APKINDEX.tar.gz"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the deleted branch still resolves: %d", resp.StatusCode)
	}
	if err := n.api.DeleteBuild(ctx, testApp, c["I"][:12]); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, n.repo(c["I"])+"/x86_64/APKINDEX.tar.gz"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a deleted build's index: %d, want 404", resp.StatusCode)
	}
	retStatus(t, "DELETE build I again", n.api.DeleteBuild(ctx, testApp, c["I"]), http.StatusNotFound)
}
