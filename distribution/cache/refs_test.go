package cache_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/cache"
	"github.com/uplinkhq/uplink/distribution/ref"
)

var app = artifact.App{Org: "acme", Name: "hello"}

// fakeResolver counts calls and can be made slow or failing; the real
// store and Redis are tested through the server.
type fakeResolver struct {
	calls  atomic.Int64
	mu     sync.Mutex
	commit string
	err    error
	gate   chan struct{}
}

func (f *fakeResolver) Resolve(ctx context.Context, _ artifact.App, name string) (ref.Resolution, error) {
	f.calls.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return ref.Resolution{}, f.err
	}
	if name != "main" {
		return ref.Resolution{}, &ref.NotFoundError{What: name}
	}
	return ref.Resolution{Kind: ref.KindBranch, Commit: f.commit}, nil
}

func (f *fakeResolver) set(commit string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.commit, f.err = commit, err
}

// Concurrent misses for one ref make one storage read.
func TestSingleflight(t *testing.T) {
	f := &fakeResolver{commit: "a", gate: make(chan struct{})}
	c := cache.NewRefs(f, cache.RefsConfig{})
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			if r, err := c.Resolve(t.Context(), app, "main"); err != nil || r.Commit != "a" {
				t.Errorf("%+v %v", r, err)
			}
		})
	}
	time.Sleep(50 * time.Millisecond) // let them pile up on the one load
	close(f.gate)
	wg.Wait()
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d storage reads for 200 concurrent misses", n)
	}
}

func TestInvalidateAndTTL(t *testing.T) {
	f := &fakeResolver{commit: "a"}
	c := cache.NewRefs(f, cache.RefsConfig{TTL: time.Hour})
	r, _ := c.Resolve(t.Context(), app, "main")
	f.set("b", nil)
	if r2, _ := c.Resolve(t.Context(), app, "main"); r2.Commit != r.Commit || f.calls.Load() != 1 {
		t.Fatalf("second lookup went to storage")
	}
	c.Invalidate(t.Context(), app)
	if r, _ := c.Resolve(t.Context(), app, "main"); r.Commit != "b" {
		t.Fatalf("after invalidation: %s", r.Commit)
	}
	// Not-found answers are cached too, and invalidated the same way.
	if _, err := c.Resolve(t.Context(), app, "dev"); !errors.Is(err, ref.ErrNotFound) {
		t.Fatal(err)
	}
	calls := f.calls.Load()
	c.Resolve(t.Context(), app, "dev")
	if f.calls.Load() != calls {
		t.Fatal("a cached not-found went to storage")
	}

	short := cache.NewRefs(f, cache.RefsConfig{TTL: time.Millisecond})
	short.Resolve(t.Context(), app, "main")
	f.set("c", nil)
	time.Sleep(5 * time.Millisecond)
	if r, _ := short.Resolve(t.Context(), app, "main"); r.Commit != "c" {
		t.Fatalf("after the TTL: %s", r.Commit)
	}
}

// When storage fails, a pointer held in memory (even expired) answers;
// with nothing held, the error goes through.
func TestStaleOnError(t *testing.T) {
	f := &fakeResolver{commit: "a"}
	c := cache.NewRefs(f, cache.RefsConfig{TTL: time.Millisecond})
	c.Resolve(t.Context(), app, "main")
	time.Sleep(5 * time.Millisecond)
	f.set("", errors.New("storage down"))
	if r, err := c.Resolve(t.Context(), app, "main"); err != nil || r.Commit != "a" {
		t.Fatalf("stale answer: %+v %v", r, err)
	}
	if _, err := c.Resolve(t.Context(), app, "other"); err == nil || errors.Is(err, ref.ErrNotFound) {
		t.Fatalf("nothing cached: %v", err)
	}
}

func BenchmarkResolveCached(b *testing.B) {
	c := cache.NewRefs(&fakeResolver{commit: "a"}, cache.RefsConfig{TTL: time.Hour})
	ctx := context.Background()
	c.Resolve(ctx, app, "main")
	b.ReportAllocs()
	for b.Loop() {
		c.Resolve(ctx, app, "main")
	}
}

// Memory holds at most MaxEntries pointers, dropping the least recently
// used; not-found answers count too.
func TestMaxEntries(t *testing.T) {
	f := &fakeResolver{commit: "a"}
	c := cache.NewRefs(f, cache.RefsConfig{MaxEntries: 2, TTL: time.Hour})
	resolve := func(name string) { c.Resolve(t.Context(), app, name) }
	resolve("main")
	resolve("gone")
	resolve("main") // main is now the most recently used
	resolve("other")
	calls := f.calls.Load()
	resolve("main")
	if f.calls.Load() != calls {
		t.Fatal("the most recently used pointer was evicted")
	}
	resolve("gone")
	if f.calls.Load() != calls+1 {
		t.Fatal("the least recently used pointer was kept beyond MaxEntries")
	}
}
