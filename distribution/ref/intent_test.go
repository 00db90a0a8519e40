package ref_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/filesystem"
)

var errCrash = errors.New("injected crash")

// faulty counts writes (puts and deletes) and fails the failAt-th one; a
// crash fails every write after it too, as a dead process writes nothing.
type faulty struct {
	storage.Driver
	mu      sync.Mutex
	writes  int
	failAt  int
	crash   bool
	crashed bool
}

func (f *faulty) arm(n int, crash bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes, f.failAt, f.crash, f.crashed = 0, n, crash, false
}

func (f *faulty) write() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.crashed || f.writes == f.failAt {
		f.crashed = f.crash
		return errCrash
	}
	return nil
}

func (f *faulty) Put(ctx context.Context, key string, r io.Reader, size int64, cond storage.Condition) (storage.Info, error) {
	if err := f.write(); err != nil {
		return storage.Info{}, err
	}
	return f.Driver.Put(ctx, key, r, size, cond)
}

func (f *faulty) Delete(ctx context.Context, key string) error {
	if err := f.write(); err != nil {
		return err
	}
	return f.Driver.Delete(ctx, key)
}

type publishEnv struct {
	t     *testing.T
	d     *faulty
	s     *ref.Store
	clock time.Time
	hooks []ref.Published
}

func newPublishEnv(t *testing.T) *publishEnv {
	fs, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := &publishEnv{t: t, d: &faulty{Driver: fs}, clock: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	e.s = ref.NewStore(e.d)
	e.s.Now = func() time.Time { return e.clock }
	e.s.AfterPublish = func(_ context.Context, p ref.Published) { e.hooks = append(e.hooks, p) }
	for i := range 4 {
		upload(t, fs, commit(i))
	}
	return e
}

func (e *publishEnv) publish(c int, branch string, tags ...string) (ref.Build, error) {
	e.clock = e.clock.Add(10 * time.Second)
	return e.s.Publish(context.Background(), app, ref.PublishRequest{Commit: commit(c), Branch: branch, Tags: tags, Message: "m"})
}

func (e *publishEnv) recover(want int) {
	e.t.Helper()
	e.clock = e.clock.Add(time.Minute)
	n, err := e.s.Recover(context.Background(), 30*time.Second)
	if err != nil || n != want {
		e.t.Fatalf("Recover: completed %d, %v; want %d", n, err, want)
	}
}

// state is what a user sees: the branch head and its history, each tag,
// the build list, and whether a publish is still pending.
type state struct {
	head    string
	history []string
	tags    map[string]string
	builds  []string
	pending int
}

func (e *publishEnv) state() state {
	e.t.Helper()
	ctx := context.Background()
	var st state
	br, err := e.s.Branch(ctx, app, "main")
	if err != nil {
		e.t.Fatal(err)
	}
	st.head = br.Commit
	for _, m := range br.History {
		st.history = append(st.history, m.Commit)
	}
	refs, err := e.s.Refs(ctx, app)
	if err != nil {
		e.t.Fatal(err)
	}
	st.tags = map[string]string{}
	for name, p := range refs.Tags {
		st.tags[name] = p.Commit
	}
	builds, err := e.s.Builds(ctx, app, "", 0)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, b := range builds {
		st.builds = append(st.builds, b.Commit)
	}
	infos, err := e.d.List(ctx, "meta/publishes/")
	if err != nil {
		e.t.Fatal(err)
	}
	st.pending = len(infos)
	return st
}

func (e *publishEnv) check(want state) {
	e.t.Helper()
	got := e.state()
	if got.head != want.head || !slices.Equal(got.history, want.history) || !slices.Equal(got.builds, want.builds) ||
		got.pending != want.pending || len(got.tags) != len(want.tags) {
		e.t.Fatalf("state %+v\nwant  %+v", got, want)
	}
	for name, c := range want.tags {
		if got.tags[name] != c {
			e.t.Fatalf("tag %s at %s, want %s (state %+v)", name, got.tags[name], c, got)
		}
	}
}

// writesOfPublish counts the writes of the publish under test.
func writesOfPublish(t *testing.T) int {
	e := newPublishEnv(t)
	if _, err := e.publish(0, "main", "v1"); err != nil {
		t.Fatal(err)
	}
	e.d.arm(0, false)
	if _, err := e.publish(1, "main", "v1", "v2"); err != nil {
		t.Fatal(err)
	}
	return e.d.writes
}

// TestPublishCrashAtEachWrite: a publish that dies at any of its writes is
// either not there at all (the intent was never written) or, once
// recovered, complete: head, one history entry for the move, both tags,
// the build listed, the hook told, no intent left. A retry of the same
// publish afterwards changes nothing.
func TestPublishCrashAtEachWrite(t *testing.T) {
	total := writesOfPublish(t)
	if total < 8 { // intent, build, journal, marker, branch, 2 tags, intent removal
		t.Fatalf("a publish with a branch and two tags made %d writes", total)
	}
	before := state{head: commit(0), history: []string{commit(0)}, tags: map[string]string{"v1": commit(0)}, builds: []string{commit(0)}}
	after := state{head: commit(1), history: []string{commit(1), commit(0)}, tags: map[string]string{"v1": commit(1), "v2": commit(1)},
		builds: []string{commit(1), commit(0)}}
	for n := 1; n <= total; n++ {
		e := newPublishEnv(t)
		if _, err := e.publish(0, "main", "v1"); err != nil {
			t.Fatal(err)
		}
		e.hooks = nil
		e.d.arm(n, true)
		if _, err := e.publish(1, "main", "v1", "v2"); !errors.Is(err, errCrash) && n < total {
			t.Fatalf("crash at write %d: publish returned %v", n, err)
		}
		e.d.arm(0, false)
		if n == 1 {
			e.recover(0)
			e.check(before)
		} else {
			// The crashed publish's intent is young: a scan leaves it to
			// the request that may still be running.
			if c, err := e.s.Recover(context.Background(), time.Hour); c != 0 || err != nil {
				t.Fatalf("crash at write %d: a young intent was completed (%d, %v)", n, c, err)
			}
			e.recover(1)
			e.check(after)
			if len(e.hooks) == 0 || e.hooks[len(e.hooks)-1].Branch != "main" || e.hooks[len(e.hooks)-1].Build.Commit != commit(1) {
				t.Fatalf("crash at write %d: hook calls %+v", n, e.hooks)
			}
		}
		// A retry of the same request is idempotent.
		br, _ := e.s.Branch(context.Background(), app, "main")
		if _, err := e.publish(1, "main", "v1", "v2"); err != nil {
			t.Fatalf("retry after a crash at write %d: %v", n, err)
		}
		e.check(after)
		if n > 1 {
			if br2, _ := e.s.Branch(context.Background(), app, "main"); !br2.UpdatedAt.Equal(br.UpdatedAt) {
				t.Fatalf("retry after a crash at write %d moved the branch again", n)
			}
		}
	}
}

// TestPublishFailedWriteRetried: a publish that fails at one write (a 503
// from storage) is completed by its retry, with the same intent.
func TestPublishFailedWriteRetried(t *testing.T) {
	total := writesOfPublish(t)
	for n := 2; n < total; n++ {
		e := newPublishEnv(t)
		if _, err := e.publish(0, "main", "v1"); err != nil {
			t.Fatal(err)
		}
		e.d.arm(n, false)
		if _, err := e.publish(1, "main", "v1", "v2"); !errors.Is(err, errCrash) {
			t.Fatalf("failure at write %d: publish returned %v", n, err)
		}
		if _, err := e.publish(1, "main", "v1", "v2"); err != nil {
			t.Fatalf("retry after a failure at write %d: %v", n, err)
		}
		e.check(state{head: commit(1), history: []string{commit(1), commit(0)}, tags: map[string]string{"v1": commit(1), "v2": commit(1)},
			builds: []string{commit(1), commit(0)}})
		br, _ := e.s.Branch(context.Background(), app, "main")
		tag, _ := e.s.Tag(context.Background(), app, "v2")
		if br.History[0].Publish == "" || br.History[0].Publish != tag.Publish {
			t.Fatalf("failure at write %d: the retry made a second intent (branch by %q, tag by %q)", n, br.History[0].Publish, tag.Publish)
		}
	}
}

// TestPublishCompletionKeepsLaterPublishes: completing an interrupted
// publish, by a scan or by its retry, does what it had not done yet and
// never undoes a publish that moved the same pointers after it.
func TestPublishCompletionKeepsLaterPublishes(t *testing.T) {
	total := writesOfPublish(t)
	for _, by := range []string{"scan", "retry"} {
		for n := 2; n < total; n++ {
			e := newPublishEnv(t)
			if _, err := e.publish(0, "main", "v1"); err != nil {
				t.Fatal(err)
			}
			e.d.arm(n, true)
			e.publish(1, "main", "v1", "v2")
			e.d.arm(0, false)
			branchMoved := e.state().head == commit(1)
			if _, err := e.publish(2, "main", "v1"); err != nil {
				t.Fatal(err)
			}
			if by == "scan" {
				e.recover(1)
			} else if _, err := e.publish(1, "main", "v1", "v2"); err != nil {
				t.Fatal(err)
			}
			history := []string{commit(2), commit(0)}
			if branchMoved {
				history = []string{commit(2), commit(1), commit(0)}
			}
			// The build's publish time is its intent's, whoever completes it.
			e.check(state{head: commit(2), history: history, tags: map[string]string{"v1": commit(2), "v2": commit(1)},
				builds: []string{commit(2), commit(1), commit(0)}})
			if h := e.hooks[len(e.hooks)-1]; h.Recovered != (by == "scan") || h.Branch != "" {
				t.Fatalf("%s after a crash at write %d told the hook %+v; its branch had moved on", by, n, h)
			}
		}
	}
}

// TestPublishingReported: from its intent on, a commit counts as being
// published.
func TestPublishingReported(t *testing.T) {
	e := newPublishEnv(t)
	e.d.arm(3, true)
	e.publish(1, "main")
	e.d.arm(0, false)
	if ok, err := e.s.Publishing(context.Background(), app, commit(1)); !ok || err != nil {
		t.Fatalf("Publishing after an interrupted publish: %v, %v", ok, err)
	}
	if ok, _ := e.s.Publishing(context.Background(), app, commit(2)); ok {
		t.Fatal("Publishing of a commit nobody published")
	}
}
