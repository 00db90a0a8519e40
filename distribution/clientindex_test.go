package distribution

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/internal/testenv"
)

var (
	testApp = artifact.App{Org: "acme", Name: "hello"}
	commitA = strings.Repeat("a", 40)
	commitB = strings.Repeat("b", 40)
	commitC = strings.Repeat("c", 40)
)

// clock is a settable time for ClientIndexes.now.
type clock struct{ t int64 }

func (c *clock) advance(d time.Duration) { c.t += int64(d) }

func newTestIndexes(cfg ClientIndexConfig, clk *clock) *ClientIndexes {
	c := NewClientIndexes(cfg)
	clk.t = time.Now().UnixNano()
	c.now = func() int64 { return clk.t }
	return c
}

func addr(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }

func TestClientIndexesMemoryBound(t *testing.T) {
	var clk clock
	c := newTestIndexes(ClientIndexConfig{MaxEntries: 3}, &clk)
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		c.Received(ctx, addr(i), testApp, "main", commitA)
	}
	// Asking about client 1 makes it recent: client 2 is the one to go.
	if got := c.Commit(ctx, addr(1), testApp, "main"); got != commitA {
		t.Fatalf("client 1: %q", got)
	}
	c.Received(ctx, addr(4), testApp, "main", commitB)
	c.Received(ctx, addr(5), testApp, "main", commitB)
	if n := c.Len(); n != 3 {
		t.Fatalf("%d entries held, bound is 3", n)
	}
	want := map[int]string{1: commitA, 2: "", 3: "", 4: commitB, 5: commitB}
	for i, w := range want {
		if got := c.Commit(ctx, addr(i), testApp, "main"); got != w {
			t.Errorf("client %d: %q, want %q", i, got, w)
		}
	}

	// Many distinct clients never grow it past the bound.
	for i := range 1000 {
		c.Received(ctx, addr(i), testApp, "main", commitC)
	}
	if n := c.Len(); n != 3 {
		t.Fatalf("%d entries after 1000 clients, bound is 3", n)
	}
}

func TestClientIndexesTTL(t *testing.T) {
	var clk clock
	c := newTestIndexes(ClientIndexConfig{TTL: 5 * time.Hour}, &clk)
	ctx := context.Background()
	c.Received(ctx, addr(1), testApp, "main", commitA)
	clk.advance(5 * time.Hour)
	if got := c.Commit(ctx, addr(1), testApp, "main"); got != commitA {
		t.Fatalf("at the TTL: %q, want A", got)
	}
	clk.advance(time.Nanosecond)
	if got := c.Commit(ctx, addr(1), testApp, "main"); got != "" {
		t.Fatalf("past the TTL: %q, want nothing", got)
	}

	// Receiving the same index again (an apk refresh answered 304)
	// restarts the TTL.
	c.Received(ctx, addr(2), testApp, "main", commitA)
	clk.advance(4 * time.Hour)
	c.Received(ctx, addr(2), testApp, "main", commitA)
	clk.advance(4 * time.Hour)
	if got := c.Commit(ctx, addr(2), testApp, "main"); got != commitA {
		t.Fatalf("4h after the last refresh: %q, want A", got)
	}
	if c.Horizon() != 5*time.Hour {
		t.Fatalf("horizon %v", c.Horizon())
	}
}

// The key is the client's address, the app and the branch: nobody else's
// index steers a client's packages.
func TestClientIndexesKey(t *testing.T) {
	var clk clock
	c := newTestIndexes(ClientIndexConfig{}, &clk)
	ctx := context.Background()
	c.Received(ctx, addr(1), testApp, "main", commitA)
	c.Received(ctx, addr(1), testApp, "main", commitB) // the later index wins
	for _, k := range []struct {
		what   string
		addr   netip.Addr
		app    artifact.App
		branch string
		want   string
	}{
		{"same client", addr(1), testApp, "main", commitB},
		{"other address", addr(2), testApp, "main", ""},
		{"other app", addr(1), artifact.App{Org: "acme", Name: "other"}, "main", ""},
		{"other org", addr(1), artifact.App{Org: "evil", Name: "hello"}, "main", ""},
		{"other branch", addr(1), testApp, "dev", ""},
		{"IPv6", netip.MustParseAddr("::ffff:10.0.0.1"), testApp, "main", ""},
	} {
		if got := c.Commit(ctx, k.addr, k.app, k.branch); got != k.want {
			t.Errorf("%s: %q, want %q", k.what, got, k.want)
		}
	}
}

// The index hot path: an unchanged answer costs no allocation.
func TestClientIndexesReceivedAllocs(t *testing.T) {
	var clk clock
	c := newTestIndexes(ClientIndexConfig{}, &clk)
	ctx := context.Background()
	branch := string([]byte("main")) // not interned, as from a request
	c.Received(ctx, addr(1), testApp, branch, commitA)
	if n := testing.AllocsPerRun(100, func() { c.Received(ctx, addr(1), testApp, branch, commitA) }); n != 0 {
		t.Fatalf("%v allocs per unchanged Received", n)
	}
}

func TestClientIndexesRedis(t *testing.T) {
	rdb := testenv.StartRedis(t)
	client := func() redis.UniversalClient {
		c := redis.NewClient(&redis.Options{Addr: rdb.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
			ReadTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond, ContextTimeoutEnabled: true})
		t.Cleanup(func() { c.Close() })
		return c
	}
	cfg := ClientIndexConfig{Prefix: "test:", TTL: 5 * time.Hour, Refresh: time.Minute, RedisTimeout: 100 * time.Millisecond}
	var clk1, clk2 clock
	reg1, reg2 := prometheus.NewRegistry(), prometheus.NewRegistry()
	cfg.Redis, cfg.Registerer = client(), reg1
	r1 := newTestIndexes(cfg, &clk1)
	cfg.Redis, cfg.Registerer = client(), reg2
	r2 := newTestIndexes(cfg, &clk2)
	ctx := context.Background()
	inspect := client()
	key := "test:client-index:10.0.0.1|acme/hello|feature/x"
	stored := func() string { v, _ := inspect.Get(ctx, key).Result(); return v }

	// An index answered by replica 1 is known to replica 2.
	r1.Received(ctx, addr(1), testApp, "feature/x", commitA)
	if got := r2.Commit(ctx, addr(1), testApp, "feature/x"); got != commitA {
		t.Fatalf("replica 2: %q, want A", got)
	}
	if ttl := inspect.TTL(ctx, key).Val(); ttl < 4*time.Hour || ttl > 5*time.Hour {
		t.Fatalf("Redis TTL %v, want 5h", ttl)
	}
	// Unchanged within Refresh: no write. Past it: written again.
	first := stored()
	clk1.advance(30 * time.Second)
	r1.Received(ctx, addr(1), testApp, "feature/x", commitA)
	if stored() != first {
		t.Fatalf("rewritten within Refresh: %q → %q", first, stored())
	}
	clk1.advance(31 * time.Second)
	r1.Received(ctx, addr(1), testApp, "feature/x", commitA)
	if v := stored(); v == first || !strings.HasPrefix(v, commitA+" ") {
		t.Fatalf("not refreshed after Refresh: %q", v)
	}

	// Replica 2 answers B later: Redis's newer answer beats replica 1's
	// memory of A.
	clk2.t = clk1.t + int64(time.Second)
	r2.Received(ctx, addr(1), testApp, "feature/x", commitB)
	if got := r1.Commit(ctx, addr(1), testApp, "feature/x"); got != commitB {
		t.Fatalf("replica 1 after replica 2 answered B: %q", got)
	}
	// A garbled value is ignored, never served.
	inspect.Set(ctx, "test:client-index:10.0.0.9|acme/hello|main", "../../etc 12", time.Hour)
	if got := r1.Commit(ctx, addr(9), testApp, "main"); got != "" {
		t.Fatalf("garbled Redis value gave %q", got)
	}

	// Redis down: nothing fails or waits past the Redis timeout, and
	// packages are served as without remembering.
	rdb.Stop()
	start := time.Now()
	r1.Received(ctx, addr(1), testApp, "feature/x", commitC)
	if got := r1.Commit(ctx, addr(1), testApp, "feature/x"); got != "" {
		t.Fatalf("with Redis down: %q, want nothing (today's order)", got)
	}
	for range 100 {
		r2.Commit(ctx, addr(1), testApp, "feature/x")
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("with Redis down, 102 calls took %v", took)
	}
	if n := counter(t, reg1, "uplink_distribution_client_index_redis_errors_total"); n < 1 {
		t.Fatal("Redis failure not counted")
	}
	if n := counter(t, reg2, "uplink_distribution_client_index_redis_errors_total"); n != 1 {
		t.Fatalf("%v Redis calls failed on replica 2: the breaker should skip Redis after the first", n)
	}

	// Back (empty): replica 1's unshared answer is written on the next
	// index request, once the breaker lets Redis be tried again.
	rdb.Start()
	time.Sleep(1100 * time.Millisecond)
	clk1.advance(time.Minute) // later than replica 2's memory of B
	r1.Received(ctx, addr(1), testApp, "feature/x", commitC)
	if got := r2.Commit(ctx, addr(1), testApp, "feature/x"); got != commitC {
		t.Fatalf("replica 2 after Redis came back: %q, want C", got)
	}
}

// counter reads an unlabelled counter from reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestClientIndexesDeployments: deployments sharing a Redis and a prefix
// keep their clients apart by namespace, and one whose storage identity
// is not known yet leaves Redis alone.
func TestClientIndexesDeployments(t *testing.T) {
	rdb := testenv.StartRedis(t)
	client := func() redis.UniversalClient {
		c := redis.NewClient(&redis.Options{Addr: rdb.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
			ReadTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond, ContextTimeoutEnabled: true})
		t.Cleanup(func() { c.Close() })
		return c
	}
	ns := func(s string, ok bool) func(context.Context) (string, bool) {
		return func(context.Context) (string, bool) { return s, ok }
	}
	deployment := func(namespace func(context.Context) (string, bool)) *ClientIndexes {
		var clk clock
		return newTestIndexes(ClientIndexConfig{Redis: client(), Prefix: "test:", Namespace: namespace, TTL: 5 * time.Hour,
			Refresh: time.Minute, RedisTimeout: 100 * time.Millisecond, Registerer: prometheus.NewRegistry()}, &clk)
	}
	ctx := context.Background()
	one, oneAgain := deployment(ns("test:one:", true)), deployment(ns("test:one:", true))
	other, unknown := deployment(ns("test:other:", true)), deployment(ns("", false))

	one.Received(ctx, addr(1), testApp, "main", commitA)
	if got := oneAgain.Commit(ctx, addr(1), testApp, "main"); got != commitA {
		t.Fatalf("another replica of the same deployment: %q, want A", got)
	}
	if got := other.Commit(ctx, addr(1), testApp, "main"); got != "" {
		t.Fatalf("another deployment under the same prefix read %q", got)
	}
	unknown.Received(ctx, addr(2), testApp, "main", commitB)
	if keys := client().Keys(ctx, "test:*").Val(); len(keys) != 1 || keys[0] != "test:one:client-index:10.0.0.1|acme/hello|main" {
		t.Fatalf("Redis keys %q; want only deployment one's entry", keys)
	}
	if got := unknown.Commit(ctx, addr(1), testApp, "main"); got != "" {
		t.Fatalf("a deployment without an identity read %q from Redis", got)
	}
}
