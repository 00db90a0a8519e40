package server_test

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/testenv"
)

// metric reads one sample from a node's /metrics; series is the name with
// its labels as Prometheus prints them, e.g. `x_total{a="b"}`.
func metric(t *testing.T, n *node, series string) float64 {
	t.Helper()
	_, body := get(t, "http://"+n.srv.AdminAddr()+"/metrics")
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}

func commitAt(t *testing.T, n *node, ref string) string {
	t.Helper()
	resp, _ := get(t, n.repo(ref)+"/x86_64/APKINDEX.tar.gz")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %d", ref, resp.StatusCode)
	}
	return resp.Header.Get("X-Uplink-Commit")
}

// replicas starts n uplinks sharing one Redis and one S3 bucket. Their
// in-memory TTL is an hour, so only pub/sub can tell them of a publish.
func replicas(t *testing.T, rdb *testenv.Redis, count int) []*node {
	shared := s3Config(t, baseConfig(t))
	var nodes []*node
	for range count {
		cfg := shared
		cfg.DataDir = t.TempDir()
		cfg.Redis = "redis://" + rdb.Addr + "/0"
		cfg.RefCacheTTL = time.Hour
		nodes = append(nodes, start(t, cfg))
	}
	return nodes
}

func TestRedisHitMissAndInvalidation(t *testing.T) {
	rdb := testenv.StartRedis(t)
	nodes := replicas(t, rdb, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	key := apktest.NewKey(t)
	a, b := commitOf("A"), commitOf("B")
	n1.publish(t, a, "main", hello(t, key, "1.0-r0", "A"))

	// The publish primed Redis with main's new pointer: n2's first lookup
	// is answered there, without reading storage.
	if got := commitAt(t, n2, "main"); got != a {
		t.Fatalf("n2: %s", got)
	}
	if metric(t, n2, `uplink_ref_lookups_total{layer="redis",result="hit"}`) != 1 ||
		metric(t, n2, `uplink_ref_lookups_total{layer="storage",result="hit"}`) != 0 {
		t.Fatal("n2's first lookup of main should be answered by Redis, primed by the publish")
	}
	// A ref nobody primed (an abbreviation) misses everywhere: n2 reads
	// storage and fills Redis; n3 then finds it there.
	if got := commitAt(t, n2, a[:9]); got != a {
		t.Fatalf("n2: %s", got)
	}
	if metric(t, n2, `uplink_ref_lookups_total{layer="redis",result="miss"}`) != 1 ||
		metric(t, n2, `uplink_ref_lookups_total{layer="storage",result="hit"}`) != 1 {
		t.Fatal("n2's first lookup of an abbreviation should miss Redis and read storage once")
	}
	if got := commitAt(t, n3, a[:9]); got != a {
		t.Fatalf("n3: %s", got)
	}
	if metric(t, n3, `uplink_ref_lookups_total{layer="redis",result="hit"}`) != 1 ||
		metric(t, n3, `uplink_ref_lookups_total{layer="storage",result="hit"}`) != 0 {
		t.Fatal("n3 should have been answered by Redis without reading storage")
	}
	// Again on n2: its memory answers.
	commitAt(t, n2, "main")
	if metric(t, n2, `uplink_ref_lookups_total{layer="local",result="hit"}`) < 1 {
		t.Fatal("n2's second lookup should hit memory")
	}

	// A publish through n1 reaches n2 and n3 through pub/sub (their TTL is
	// an hour), and Redis does not serve the old pointer.
	n1.publish(t, b, "main", hello(t, key, "2.0-r0", "B"))
	for _, n := range []*node{n2, n3} {
		eventually(t, 5*time.Second, "replica sees the publish", func() bool { return commitAt(t, n, "main") == b })
	}
	n4 := start(t, n2.cfg)
	if got := commitAt(t, n4, "main"); got != b {
		t.Fatalf("a new replica got %s from Redis after the publish, want B", got)
	}
}

// TestRedisDown: Redis stops mid-test; requests, publishes and readiness
// keep working from storage, and the fall-through is counted.
func TestRedisDown(t *testing.T) {
	rdb := testenv.StartRedis(t)
	nodes := replicas(t, rdb, 2)
	n1, n2 := nodes[0], nodes[1]
	key := apktest.NewKey(t)
	a, b := commitOf("A"), commitOf("B")
	n1.publish(t, a, "main", hello(t, key, "1.0-r0", "A"))
	if got := commitAt(t, n2, "main"); got != a {
		t.Fatal(got)
	}

	rdb.Stop()
	if got := commitAt(t, n2, "main"); got != a {
		t.Fatalf("with Redis down, n2 serves %s", got)
	}
	n1.publish(t, b, "main", hello(t, key, "2.0-r0", "B"))
	if got := commitAt(t, n1, "main"); got != b {
		t.Fatalf("with Redis down, the publishing replica serves %s", got)
	}
	// n2 cannot hear of it; a replica that never cached the ref reads storage.
	n3cfg := n2.cfg
	n3cfg.DataDir = t.TempDir()
	n3 := start(t, n3cfg)
	if got := commitAt(t, n3, "main"); got != b {
		t.Fatalf("with Redis down, a fresh replica serves %s", got)
	}
	if got := commitAt(t, n3, a); got != a {
		t.Fatalf("commit ref with Redis down: %s", got)
	}
	resp, body := get(t, "http://"+n3.srv.AdminAddr()+"/readyz")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "unreachable") {
		t.Fatalf("/readyz with Redis down: %d %s", resp.StatusCode, body)
	}
	if metric(t, n1, "uplink_redis_fallthrough_total") < 1 || metric(t, n3, "uplink_redis_fallthrough_total") < 1 {
		t.Fatal("Redis failures were not counted")
	}

	// Redis comes back: replicas resubscribe, drop what they may have
	// missed, and hear of publishes again.
	rdb.Start()
	eventually(t, 10*time.Second, "n2 catches up after Redis returns", func() bool { return commitAt(t, n2, "main") == b })
	c := commitOf("C")
	n1.publish(t, c, "main", hello(t, key, "3.0-r0", "C"))
	eventually(t, 5*time.Second, "n2 hears of publishes again", func() bool { return commitAt(t, n2, "main") == c })
}
