package cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/internal/testenv"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/filesystem"
)

var testApp = artifact.App{Org: "acme", Name: "hello"}

// branchStore stands in for one deployment's storage: main points at a
// commit that the test moves; reads are counted.
type branchStore struct {
	mu     sync.Mutex
	commit string
	reads  atomic.Int64
}

func (s *branchStore) Resolve(_ context.Context, _ artifact.App, name string) (ref.Resolution, error) {
	s.reads.Add(1)
	if name != "main" {
		return ref.Resolution{}, &ref.NotFoundError{What: name}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return ref.Resolution{Kind: ref.KindBranch, Commit: s.commit}, nil
}

func (s *branchStore) move(commit string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commit = commit
}

// replica is a Refs over real Redis at addr, configured as `uplink serve`
// configures it, with Run going until the test ends.
func replica(t *testing.T, addr string, inner ref.Resolver, ttl time.Duration, deployment string) *Refs {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 800 * time.Millisecond,
		ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond, MaxRetries: -1, ContextTimeoutEnabled: true})
	c := NewRefs(inner, RefsConfig{Redis: rc, Prefix: "test:", TTL: ttl, RedisTTL: time.Minute,
		RedisTimeout: 200 * time.Millisecond, Registerer: prometheus.NewRegistry(),
		Identity: func(context.Context) (string, error) { return deployment, nil }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; rc.Close() })
	return c
}

// counter reads one counter through a registry of its own.
func counter(c prometheus.Counter) float64 {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
		panic(fmt.Sprint("gathering a counter: ", err))
	}
	return mfs[0].GetMetric()[0].GetCounter().GetValue()
}

func mainAt(t *testing.T, c *Refs) string {
	t.Helper()
	r, err := c.Resolve(t.Context(), testApp, "main")
	if err != nil {
		t.Fatal(err)
	}
	return r.Commit
}

func eventually(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A publish that Redis never hears of (its replica is cut off) still
// reaches a replica that reads pointers through Redis within the TTL,
// counted from when the pointer was read from storage, not from when the
// replica found it in Redis.
func TestRedisPointerOlderThanTTLNotTrusted(t *testing.T) {
	rdb := testenv.StartRedis(t)
	st := &branchStore{commit: "a"}
	const ttl = 2 * time.Second
	a := replica(t, rdb.Addr, st, ttl, "dep")
	b := replica(t, rdb.Addr, st, ttl, "dep")

	readA := time.Now()
	if got := mainAt(t, a); got != "a" {
		t.Fatal(got)
	}
	reads := st.reads.Load()
	if got := mainAt(t, b); got != "a" {
		t.Fatal(got)
	}
	if time.Since(readA) < ttl/2 && st.reads.Load() != reads {
		t.Fatal("b read storage although Redis held a young pointer")
	}
	st.move("b") // a publish whose invalidation never reached Redis
	time.Sleep(time.Until(readA.Add(ttl + 100*time.Millisecond)))
	if got := mainAt(t, b); got != "b" {
		t.Fatalf("b serves %s more than the TTL after the pointer was read from storage", got)
	}
	if n := counter(b.lookups.WithLabelValues("redis", "stale")); n < 1 {
		t.Fatalf("b's stale Redis lookups: %v", n)
	}
	if got := mainAt(t, a); got != "b" {
		t.Fatalf("a serves %s", got)
	}
}

// Two deployments (different storage) that share a Redis and a prefix
// each serve their own heads, neither overwrites the other's pointers,
// and one's publishes leave the other's memory alone.
func TestRedisForeignDeploymentIgnored(t *testing.T) {
	rdb := testenv.StartRedis(t)
	stA, stB := &branchStore{commit: "a"}, &branchStore{commit: "b"}
	a := replica(t, rdb.Addr, stA, time.Hour, "dep-a")
	b := replica(t, rdb.Addr, stB, time.Hour, "dep-b")
	if got := mainAt(t, a); got != "a" {
		t.Fatal(got)
	}
	if got := mainAt(t, b); got != "b" {
		t.Fatalf("deployment b serves %s", got)
	}
	// New replicas of each deployment find their own pointer in Redis.
	for _, want := range []struct{ dep, commit string }{{"dep-a", "a"}, {"dep-b", "b"}} {
		st := &branchStore{commit: "unread"}
		if got := mainAt(t, replica(t, rdb.Addr, st, time.Hour, want.dep)); got != want.commit || st.reads.Load() != 0 {
			t.Fatalf("new replica of %s: %s after %d storage reads; want %s from Redis", want.dep, got, st.reads.Load(), want.commit)
		}
	}

	// A pointer tagged with another deployment, wherever it is found, is
	// not served.
	rc := redis.NewClient(&redis.Options{Addr: rdb.Addr})
	defer rc.Close()
	a2 := replica(t, rdb.Addr, &branchStore{commit: "a"}, time.Hour, "dep-a")
	gen, ok := a2.redisGen(t.Context(), testApp)
	if !ok {
		t.Fatal("no generation")
	}
	foreign := `{"kind":"branch","commit":"b","read_at":` + strconv.FormatInt(time.Now().UnixMilli(), 10) + `,"deployment":"dep-b"}`
	if err := rc.HSet(t.Context(), a2.hashKey(testApp, gen), "main", foreign).Err(); err != nil {
		t.Fatal(err)
	}
	if got := mainAt(t, a2); got != "a" {
		t.Fatalf("a replica served another deployment's pointer: %s", got)
	}
	if n := counter(a2.lookups.WithLabelValues("redis", "foreign")); n != 1 {
		t.Fatalf("foreign lookups: %v", n)
	}
	if a.channel() == b.channel() || !strings.Contains(a.channel(), "dep-a") {
		t.Fatalf("channels %q and %q", a.channel(), b.channel())
	}

	// b's publish does not reach a: a keeps its pointer (its TTL is an
	// hour), until a publish of its own deployment.
	stA.move("a2")
	b.Invalidate(t.Context(), testApp)
	time.Sleep(300 * time.Millisecond)
	if got := mainAt(t, a); got != "a" {
		t.Fatalf("another deployment's publish dropped a's pointer: %s", got)
	}
	a2.Invalidate(t.Context(), testApp)
	eventually(t, 5*time.Second, "a hears of its own deployment's publish", func() bool { return mainAt(t, a) == "a2" })
}

// A publish made while Redis is down is announced (generation moved, the
// new pointer primed) once Redis is back, without holding up the publish.
func TestRedisAnnounceRetriedAfterRedisReturns(t *testing.T) {
	rdb := testenv.StartRedis(t)
	st := &branchStore{commit: "a"}
	a := replica(t, rdb.Addr, st, time.Hour, "dep")
	if got := mainAt(t, a); got != "a" {
		t.Fatal(got)
	}

	rdb.Stop()
	st.move("b")
	start := time.Now()
	a.Invalidate(t.Context(), testApp)
	a.Prime(t.Context(), testApp, "main")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the publish waited %v for Redis", d)
	}
	if got := mainAt(t, a); got != "b" {
		t.Fatalf("the publishing replica serves %s", got)
	}
	a.amu.Lock()
	pending := a.pending[testApp]
	a.amu.Unlock()
	if pending == nil {
		t.Fatal("nothing queued for the publish Redis missed")
	}

	rdb.Start() // empty, as after a crash
	rc := redis.NewClient(&redis.Options{Addr: rdb.Addr})
	defer rc.Close()
	eventually(t, 15*time.Second, "the announcement reaches Redis", func() bool {
		gen, _ := rc.Get(t.Context(), a.genKey(testApp)).Result()
		return gen == "1"
	})
	eventually(t, 5*time.Second, "the queue empties", func() bool {
		a.amu.Lock()
		defer a.amu.Unlock()
		return len(a.pending) == 0
	})
	if n := counter(a.announces.WithLabelValues("delivered")); n != 1 {
		t.Fatalf("delivered announcements: %v", n)
	}
	// The retry primed the new generation: a new replica finds main there.
	fresh := &branchStore{commit: "unread"}
	if got := mainAt(t, replica(t, rdb.Addr, fresh, time.Hour, "dep")); got != "b" || fresh.reads.Load() != 0 {
		t.Fatalf("new replica: %s after %d storage reads; want b primed in Redis", got, fresh.reads.Load())
	}
}

// Announcements queue one per app, keep the refs to prime, and are given
// up once the Redis TTL has passed since the app's latest publish.
func TestRedisAnnounceQueueBounded(t *testing.T) {
	st := &branchStore{commit: "a"}
	c := NewRefs(st, RefsConfig{Redis: redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), TTL: time.Second,
		RedisTTL: time.Second, Identity: func(context.Context) (string, error) { return "dep", nil }})
	for i := range maxPendingApps + 10 {
		c.enqueue(artifact.App{Org: "acme", Name: "app" + strconv.Itoa(i)}, []string{"main"})
	}
	for range 3 * maxPendingNames {
		c.enqueue(testApp, []string{"t" + strconv.Itoa(int(st.reads.Add(1)))})
	}
	c.amu.Lock()
	apps, names := len(c.pending), len(c.pending[testApp].names)
	c.amu.Unlock()
	if apps != maxPendingApps || names != maxPendingNames {
		t.Fatalf("%d apps, %d names of one app queued; want at most %d and %d", apps, names, maxPendingApps, maxPendingNames)
	}
	if n := counter(c.announces.WithLabelValues("dropped")); n != 11 {
		t.Fatalf("dropped: %v", n)
	}
	time.Sleep(1100 * time.Millisecond)
	if !c.flushAnnouncements(t.Context()) {
		t.Fatal("announcements older than the Redis TTL were not given up")
	}
}

// A replica that cannot reach Redis at all catches up with a publish
// within the TTL.
func TestRedisUnreachableReplicaCatchesUp(t *testing.T) {
	rdb := testenv.StartRedis(t)
	st := &branchStore{commit: "a"}
	const ttl = time.Second
	pub := replica(t, rdb.Addr, st, ttl, "dep")
	cut := replica(t, "127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)), st, ttl, "dep")
	if mainAt(t, pub) != "a" || mainAt(t, cut) != "a" {
		t.Fatal("before the publish")
	}
	st.move("b")
	pub.Invalidate(t.Context(), testApp)
	pub.Prime(t.Context(), testApp, "main")
	published := time.Now()
	eventually(t, ttl+3*time.Second, "the cut-off replica catches up", func() bool { return mainAt(t, cut) == "b" })
	t.Logf("caught up %v after the publish", time.Since(published).Round(time.Millisecond))
}

func TestStorageIdentity(t *testing.T) {
	drv, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Replicas starting at once agree on one id.
	ids := make([]string, 8)
	errs := make([]error, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() { ids[i], errs[i] = StorageIdentity(drv)(t.Context()) })
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] || ids[0] == "" {
			t.Fatalf("identities %q, errors %v", ids, errs)
		}
	}
	other, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := StorageIdentity(other)(t.Context()); id == ids[0] {
		t.Fatal("two stores share an identity")
	}
	if _, err := drv.Put(t.Context(), DeploymentKey, strings.NewReader("bad id\n"), -1, storage.Condition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := StorageIdentity(drv)(t.Context()); err == nil || !strings.Contains(err.Error(), DeploymentKey) {
		t.Fatalf("corrupt identity: %v", err)
	}
	if errors.Is(err, storage.ErrNotFound) {
		t.Fatal("corrupt identity reported as missing")
	}
}

// A pointer stamped far in the future (a replica whose clock runs ahead)
// is not trusted, or it would outlive the TTL.
func TestRedisPointerFromTheFutureNotTrusted(t *testing.T) {
	rdb := testenv.StartRedis(t)
	st := &branchStore{commit: "now"}
	c := replica(t, rdb.Addr, st, 2*time.Second, "dep")
	gen, ok := c.redisGen(t.Context(), testApp)
	if !ok {
		t.Fatal("no generation")
	}
	rc := redis.NewClient(&redis.Options{Addr: rdb.Addr})
	defer rc.Close()
	future := `{"kind":"branch","commit":"future","read_at":` + strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10) + `,"deployment":"dep"}`
	if err := rc.HSet(t.Context(), c.hashKey(testApp, gen), "main", future).Err(); err != nil {
		t.Fatal(err)
	}
	if got := mainAt(t, c); got != "now" {
		t.Fatalf("served a pointer read an hour from now: %s", got)
	}
}
