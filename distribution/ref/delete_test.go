package ref_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
)

// TestDeleteBuildWhilePublishing: a build whose publish is unfinished is
// in use; a publish of a commit being deleted steps back, leaving no
// intent; the delete then removes the build, its moves and its files.
func TestDeleteBuildWhilePublishing(t *testing.T) {
	ctx := context.Background()
	e := newPublishEnv(t)
	for _, c := range []int{0, 1, 2} {
		if _, err := e.publish(c, "main"); err != nil {
			t.Fatal(err)
		}
	}
	// A publish of 1 to another branch fails after its build record was
	// found and before its intent is removed: it is under way.
	e.d.arm(3, true)
	if _, err := e.publish(1, "dev"); err == nil {
		t.Fatal("the armed publish succeeded")
	}
	e.d.arm(0, false)
	var inUse *ref.InUseError
	if _, err := e.s.DeleteBuild(ctx, app, commit(1), nil); !errors.As(err, &inUse) || !strings.Contains(err.Error(), "publish") {
		t.Fatalf("delete during a publish: %v, want in use by the publish", err)
	}
	e.recover(1)

	// Now 1 is the head of dev; once dev is gone it can go.
	if _, err := e.s.DeleteBuild(ctx, app, commit(1), nil); !errors.As(err, &inUse) || !slices.Contains(inUse.Users, "branch dev") {
		t.Fatalf("delete of dev's head: %v, want in use by branch dev", err)
	}
	if err := e.s.DeleteBranch(ctx, app, "dev"); err != nil {
		t.Fatal(err)
	}
	// While the delete runs (its check), a publish of the same commit is
	// refused and leaves nothing behind.
	var during error
	check := func(ctx context.Context, c string) error {
		_, during = e.publish(1, "other")
		return nil
	}
	d, err := e.s.DeleteBuild(ctx, app, commit(1)[:10], check)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := errors.AsType[*ref.DeletingError](during); !ok {
		t.Fatalf("publish during the delete: %v, want a DeletingError", during)
	}
	if busy, _ := e.s.Publishing(ctx, app, commit(1)); busy {
		t.Fatal("the refused publish left its intent")
	}
	if d.Build.Commit != commit(1) || d.Bytes == 0 {
		t.Fatalf("deleted %+v", d)
	}
	if _, err := e.s.Build(ctx, app, commit(1)); !errors.Is(err, ref.ErrNotFound) {
		t.Fatalf("the build record stays: %v", err)
	}
	if archs, _ := e.s.Archs(ctx, app, commit(1)); len(archs) != 0 {
		t.Fatalf("its files stay: %v", archs)
	}
	main, err := e.s.Builds(ctx, app, "main", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range main {
		if b.Commit == commit(1) {
			t.Fatal("main's history still moves to the deleted build")
		}
	}
	if res, err := e.s.Resolve(ctx, app, "main"); err != nil || slices.Contains(res.Fallback, commit(1)) {
		t.Fatalf("main falls back to the deleted build: %+v %v", res, err)
	}
	// Published again once the delete is done: files first, as CI does.
	upload(t, e.d.Driver, commit(1))
	if _, err := e.publish(1, "main"); err != nil {
		t.Fatalf("publishing the commit again after its delete: %v", err)
	}
}

// TestSetTag: created, same, moved by abbreviation; unknown commits and
// bad names refused.
func TestSetTag(t *testing.T) {
	ctx := context.Background()
	e := newPublishEnv(t)
	for _, c := range []int{0, 1} {
		if _, err := e.publish(c, "main"); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		sha     string
		created bool
	}{{commit(0), true}, {commit(0), false}, {commit(1)[:7], false}}
	var last ref.Tag
	for _, st := range steps {
		tag, created, err := e.s.SetTag(ctx, app, "rel/1", st.sha)
		if err != nil || created != st.created {
			t.Fatalf("SetTag %s: created %v, %v; want created %v", st.sha, created, err, st.created)
		}
		if tag.UpdatedAt.Before(last.UpdatedAt) {
			t.Fatalf("the tag's time went back: %v after %v", tag.UpdatedAt, last.UpdatedAt)
		}
		last = tag
	}
	if res, err := e.s.Resolve(ctx, app, "rel/1"); err != nil || res.Commit != commit(1) {
		t.Fatalf("rel/1 resolves to %+v %v, want %s", res, err, commit(1))
	}
	if _, _, err := e.s.SetTag(ctx, app, "v9", commit(3)); !errors.Is(err, ref.ErrNotFound) {
		t.Fatalf("tag of an unpublished commit: %v", err)
	}
	if _, _, err := e.s.SetTag(ctx, app, "a..b", commit(0)); !errors.Is(err, artifact.ErrInvalid) {
		t.Fatalf("bad tag name: %v", err)
	}
	if err := e.s.DeleteTag(ctx, app, "rel/1"); err != nil {
		t.Fatal(err)
	}
	if err := e.s.DeleteTag(ctx, app, "rel/1"); !errors.Is(err, ref.ErrNotFound) {
		t.Fatalf("deleting it again: %v", err)
	}
}
