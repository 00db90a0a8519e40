package ref_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/internal/testenv"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/filesystem"
	"github.com/uplinkhq/uplink/storage/s3/s3test"
)

var app = artifact.App{Org: "acme", Name: "hello"}

func commit(i int) string { return fmt.Sprintf("%x", sha1.Sum([]byte(fmt.Sprint(i)))) }

func drivers(t *testing.T, fn func(t *testing.T, d storage.Driver)) {
	t.Run("filesystem", func(t *testing.T) {
		d, err := filesystem.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		fn(t, d)
	})
	t.Run("s3", func(t *testing.T) {
		gw := testenv.StartS3(t)
		fn(t, s3test.New(t, gw, gw.NewBucket(t)))
	})
}

// upload puts a (fake) index for commit so that it can be published.
func upload(t testing.TB, d storage.Driver, c string) {
	b := []byte("index of " + c)
	if _, err := d.Put(context.Background(), artifact.Key(app, c, "x86_64", artifact.IndexFile), bytes.NewReader(b), int64(len(b)), storage.Condition{}); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentPublishes: many publishers race on one branch; every
// publish is in the history exactly once and the head is the last move.
func TestConcurrentPublishes(t *testing.T) {
	drivers(t, func(t *testing.T, d storage.Driver) {
		s := ref.NewStore(d)
		const n = 24
		for i := range n {
			upload(t, d, commit(i))
		}
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				_, err := s.Publish(t.Context(), app, ref.PublishRequest{Commit: commit(i), Branch: "main"})
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		br, err := s.Branch(t.Context(), app, "main")
		if err != nil {
			t.Fatal(err)
		}
		if len(br.History) != n {
			t.Fatalf("history has %d moves, want %d", len(br.History), n)
		}
		seen := map[string]bool{}
		for i, m := range br.History {
			seen[m.Commit] = true
			if i+1 < len(br.History) && (m.Previous != br.History[i+1].Commit || !m.At.After(br.History[i+1].At)) {
				t.Fatalf("history %d does not follow %d: %+v then %+v", i, i+1, m, br.History[i+1])
			}
		}
		for i := range n {
			if !seen[commit(i)] {
				t.Fatalf("publish of %s was lost", commit(i))
			}
		}
		if br.Commit != br.History[0].Commit {
			t.Fatalf("head %s is not the last move %s", br.Commit, br.History[0].Commit)
		}
		builds, err := s.Builds(t.Context(), app, "", 0)
		if err != nil || len(builds) != n {
			t.Fatalf("builds: %d, %v", len(builds), err)
		}
	})
}

func TestResolveOrder(t *testing.T) {
	drivers(t, func(t *testing.T, d storage.Driver) {
		s := ref.NewStore(d)
		ctx := t.Context()
		for i := range 3 {
			upload(t, d, commit(i))
		}
		c0, c1, c2 := commit(0), commit(1), commit(2)
		mustPublish(t, s, ref.PublishRequest{Commit: c0, Branch: "main", Tags: []string{"v1"}})
		mustPublish(t, s, ref.PublishRequest{Commit: c1, Branch: "main"})
		// A branch named like another commit's abbreviation wins over it.
		mustPublish(t, s, ref.PublishRequest{Commit: c2, Branch: c0[:8]})
		mustPublish(t, s, ref.PublishRequest{Commit: c2, Branch: "feature/x"})

		for _, tc := range []struct {
			ref    string
			kind   ref.Kind
			commit string
		}{
			{c0, ref.KindCommit, c0},
			{"main", ref.KindBranch, c1},
			{"feature/x", ref.KindBranch, c2},
			{"v1", ref.KindTag, c0},
			{c0[:8], ref.KindBranch, c2},
			{c1[:7], ref.KindAbbrev, c1},
			{c1[:12], ref.KindAbbrev, c1},
		} {
			r, err := s.Resolve(ctx, app, tc.ref)
			if err != nil || r.Kind != tc.kind || r.Commit != tc.commit {
				t.Errorf("Resolve(%q) = %+v, %v; want %s %s", tc.ref, r, err, tc.kind, tc.commit)
			}
		}
		r, _ := s.Resolve(ctx, app, "main")
		if len(r.Fallback) != 1 || r.Fallback[0] != c0 {
			t.Errorf("main's fallback = %v, want [%s]", r.Fallback, c0)
		}
		for _, name := range []string{"nope", commit(99), commit(99)[:10], c1[:6], "../main", "acme/../main"} {
			if _, err := s.Resolve(ctx, app, name); !errors.Is(err, ref.ErrNotFound) {
				t.Errorf("Resolve(%q): %v, want not found", name, err)
			}
		}
		if _, err := s.Resolve(ctx, artifact.App{Org: "acme", Name: "other"}, "main"); !errors.Is(err, ref.ErrNotFound) {
			t.Errorf("other app: %v", err)
		}
	})
}

func TestPublishRefusesWhatCannotServe(t *testing.T) {
	d, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := ref.NewStore(d)
	var mi *ref.MissingIndexError
	if _, err := s.Publish(t.Context(), app, ref.PublishRequest{Commit: commit(1), Branch: "main"}); !errors.As(err, &mi) {
		t.Fatalf("no index: %v", err)
	}
	upload(t, d, commit(1))
	for _, req := range []ref.PublishRequest{
		{Commit: "abc", Branch: "main"},
		{Commit: commit(1), Branch: "a..b"},
		{Commit: commit(1), Branch: "main", Tags: []string{"-x"}},
		{Commit: commit(1), Branch: "fix-\xff"},
		{Commit: commit(1), Branch: "main", Tags: []string{"v\xc3"}},
	} {
		if _, err := s.Publish(t.Context(), app, req); !errors.Is(err, artifact.ErrInvalid) {
			t.Errorf("%+v: %v, want invalid", req, err)
		}
	}
}

// A pointer's move time only grows, and in whole seconds strictly after
// the previous one, even when the clock stands still or goes back.
func TestMoveTimeIsMonotonic(t *testing.T) {
	d, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 12, 0, 0, 400_000_000, time.UTC)
	s := ref.NewStore(d)
	s.Now = func() time.Time { return now }
	var last time.Time
	for i := range 4 {
		upload(t, d, commit(i))
		mustPublish(t, s, ref.PublishRequest{Commit: commit(i), Branch: "main"})
		br, _ := s.Branch(t.Context(), app, "main")
		if !br.UpdatedAt.After(last) || br.UpdatedAt.Nanosecond() != 0 || !br.UpdatedAt.After(now) {
			t.Fatalf("move %d at %v after %v (clock %v)", i, br.UpdatedAt, last, now)
		}
		last = br.UpdatedAt
		now = now.Add(-time.Minute)
	}
}

func mustPublish(t *testing.T, s *ref.Store, req ref.PublishRequest) {
	t.Helper()
	if _, err := s.Publish(t.Context(), app, req); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkResolveBranch(b *testing.B) {
	d, err := filesystem.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	s := ref.NewStore(d)
	upload(b, d, commit(1))
	if _, err := s.Publish(context.Background(), app, ref.PublishRequest{Commit: commit(1), Branch: "main"}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Resolve(context.Background(), app, "main"); err != nil {
			b.Fatal(err)
		}
	}
}
