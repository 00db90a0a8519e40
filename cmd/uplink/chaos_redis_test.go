package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/testenv"
)

// redisChaosReplica is an `uplink serve` on real S3 (versitygw) and the
// Redis at redisAddr, with its admin address for /metrics.
type redisChaosReplica struct {
	*replica
	admin string
}

func startRedisChaosReplica(t *testing.T, gw *testenv.S3, bucket, redisAddr string, extra ...string) *redisChaosReplica {
	t.Helper()
	listen, dist, admin := listenEnv(t)
	env := cliEnv(append(append(listen, s3Env(gw, gw.Endpoint, bucket, redisAddr)...), extra...)...)
	r := &redisChaosReplica{replica: &replica{proc: startServe(t, t.TempDir(), env), api: client.New(admin, replicaToken),
		dist: dist}, admin: admin}
	deadline := time.Now().Add(time.Minute)
	for {
		if resp, err := http.Get("http://" + admin + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r
			}
		}
		if r.proc.exited() || time.Now().After(deadline) {
			t.Fatalf("replica did not start:\n%s", r.proc.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metric reads one series (name with labels as Prometheus prints them)
// from the replica's /metrics; 0 when absent.
func (r *redisChaosReplica) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + r.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if name, value, ok := strings.Cut(sc.Text(), " "); ok && name == series {
			v, _ := strconv.ParseFloat(value, 64)
			return v
		}
	}
	return 0
}

// mainCommit is the commit r serves main's index from.
func (r *redisChaosReplica) mainCommit(t *testing.T, hc *http.Client) string {
	t.Helper()
	resp, err := hc.Get(r.dist + "/distribution/main/acme/hello/x86_64/APKINDEX.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("main's index through %s: %s", r.dist, resp.Status)
	}
	return resp.Header.Get("X-Uplink-Commit")
}

// redisChaosLoad is a bounded load: workers fetch each URL in turn until
// stopped, the deadline or the request budget, whichever comes first,
// and check every answer is a 200 with the expected bytes.
type redisChaosLoad struct {
	ok, failed atomic.Int64
	slowest    atomic.Int64 // ns
	mu         sync.Mutex
	failures   []string
	stop       chan struct{}
	stopOnce   sync.Once
	wg         sync.WaitGroup
}

func startRedisChaosLoad(want map[string][]byte, workers int, within time.Duration, budget int64) *redisChaosLoad {
	l := &redisChaosLoad{stop: make(chan struct{})}
	urls := make([]string, 0, len(want))
	for u := range want {
		urls = append(urls, u)
	}
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	deadline := time.Now().Add(within)
	for w := range workers {
		l.wg.Go(func() {
			for i := w; time.Now().Before(deadline) && l.ok.Load()+l.failed.Load() < budget; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				u := urls[i%len(urls)]
				start := time.Now()
				err := redisChaosFetch(hc, u, want[u])
				if d := int64(time.Since(start)); d > l.slowest.Load() {
					l.slowest.Store(d) // racy maximum: good enough for a log line
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.failures) < 10 {
						l.failures = append(l.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	return l
}

func redisChaosFetch(hc *http.Client, url string, want []byte) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s: reading the body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
		return fmt.Errorf("%s: %s, %d bytes (want 200, %d bytes): %.200q", url, resp.Status, len(body), len(want), body)
	}
	return nil
}

func (l *redisChaosLoad) end() {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// TestChaosRedis: two replicas sharing Redis and S3, under a bounded load
// of clients fetching the index and the package through a branch from
// both, while Redis is killed and restarted, frozen (SIGSTOP) and thawed,
// and flushed: every request answers 200 with the right bytes, and
// requests keep completing during each outage, not only after it.
func TestChaosRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	uplinkBinary(t)
	rdb := testenv.StartRedis(t)
	gw := testenv.StartS3(t)
	bucket := gw.NewBucket(t)
	// A short ref cache TTL sends more lookups to Redis, where the faults are.
	r1 := startRedisChaosReplica(t, gw, bucket, rdb.Addr, "UPLINK_REF_CACHE_TTL=1s")
	r2 := startRedisChaosReplica(t, gw, bucket, rdb.Addr, "UPLINK_REF_CACHE_TTL=1s")
	files := r1.publish(t, apktest.NewKey(t), sha("chaos-redis"), "1.0-r0")
	want := map[string][]byte{}
	for _, r := range []*redisChaosReplica{r1, r2} {
		for _, p := range []string{"x86_64/APKINDEX.tar.gz", "x86_64/hello-1.0-r0.apk"} {
			want[r.dist+"/distribution/main/acme/hello/"+p] = files[p]
		}
	}

	load := startRedisChaosLoad(want, 4, 50*time.Second, 50_000)
	defer load.end()
	phase := func(name string, fault, repair func(), hold time.Duration) {
		t.Helper()
		time.Sleep(time.Second)
		before := load.ok.Load()
		fault()
		time.Sleep(hold)
		during := load.ok.Load() - before
		repair()
		time.Sleep(2 * time.Second)
		t.Logf("%s: %d requests answered during the fault, %d failed so far", name, during, load.failed.Load())
		if during < 10 {
			t.Errorf("%s: only %d requests answered during the fault: requests wait for Redis", name, during)
		}
	}
	phase("redis killed", rdb.Stop, rdb.Start, 3*time.Second)
	phase("redis frozen", rdb.Freeze, rdb.Thaw, 3*time.Second)
	rc := redis.NewClient(&redis.Options{Addr: rdb.Addr})
	defer rc.Close()
	phase("redis flushed", func() {
		if err := rc.FlushAll(context.Background()).Err(); err != nil {
			t.Errorf("FLUSHALL: %v", err)
		}
	}, func() {}, time.Second)
	load.end()

	t.Logf("%d requests answered, %d failed, slowest %v", load.ok.Load(), load.failed.Load(), time.Duration(load.slowest.Load()).Round(time.Millisecond))
	if n := load.failed.Load(); n != 0 {
		t.Fatalf("%d failed requests, first ones:\n%s", n, strings.Join(load.failures, "\n"))
	}
	if load.ok.Load() < 100 {
		t.Fatalf("only %d requests in the whole run: the load did not run", load.ok.Load())
	}
	if r1.metric(t, "uplink_redis_fallthrough_total")+r2.metric(t, "uplink_redis_fallthrough_total") == 0 {
		t.Fatal("no Redis failure was counted: the faults did not reach the replicas")
	}
}

// redisCutProxy forwards TCP to Redis until cut; while cut it closes
// every connection, held or new, so its side sees Redis gone while the
// other replicas keep theirs.
type redisCutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

func startRedisCutProxy(t *testing.T, target string) *redisCutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &redisCutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); p.setCut(true); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !p.track(c) {
				c.Close()
				continue
			}
			wg.Go(func() {
				defer p.untrack(c)
				up, err := net.DialTimeout("tcp", target, time.Second)
				if err != nil || !p.track(up) {
					if up != nil {
						up.Close()
					}
					return
				}
				defer p.untrack(up)
				go func() { io.Copy(up, c); up.Close() }()
				io.Copy(c, up)
			})
		}
	})
	return p
}

func (p *redisCutProxy) addr() string { return p.ln.Addr().String() }

func (p *redisCutProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *redisCutProxy) untrack(c net.Conn) {
	c.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

func (p *redisCutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}

// TestChaosRedisPublisherCutOff: of two replicas sharing Redis, the one
// that publishes has lost Redis (through a proxy the test cuts). The
// other, which reads main's pointer through Redis, serves the new commit
// within --ref-cache-ttl of the 201 (before, it kept the old one for
// --redis-ttl); once Redis is back, the publisher announces what it
// missed.
func TestChaosRedisPublisherCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	uplinkBinary(t)
	rdb := testenv.StartRedis(t)
	gw := testenv.StartS3(t)
	bucket := gw.NewBucket(t)
	proxy := startRedisCutProxy(t, rdb.Addr)
	const ttl = 2 * time.Second
	// A roomy Redis timeout: a loaded machine must not fail Redis calls the
	// test counts on.
	ttls := []string{"UPLINK_REF_CACHE_TTL=" + ttl.String(), "UPLINK_REDIS_TTL=1m", "UPLINK_REDIS_TIMEOUT=1s"}
	pub := startRedisChaosReplica(t, gw, bucket, proxy.addr(), ttls...)
	other := startRedisChaosReplica(t, gw, bucket, rdb.Addr, ttls...)
	hc := &http.Client{Timeout: 20 * time.Second}
	key := apktest.NewKey(t)
	a, b := sha("cutoff-A"), sha("cutoff-B")
	pub.publish(t, key, a, "1.0-r0")
	// The other replica must be reading main's pointer through Redis, or
	// the test would prove nothing. The publish primed Redis; should that
	// have failed, its own storage read fills Redis for its next lookup.
	deadline := time.Now().Add(20 * time.Second)
	for other.metric(t, `uplink_ref_lookups_total{layer="redis",result="hit"}`) < 1 {
		if got := other.mainCommit(t, hc); got != a {
			t.Fatalf("before the cut, the other replica serves %s, want A", got)
		}
		if time.Now().After(deadline) {
			t.Fatal("the other replica never read main's pointer through Redis")
		}
		time.Sleep(ttl / 4)
	}

	proxy.setCut(true)
	pub.publish(t, key, b, "2.0-r0")
	published := time.Now()
	if got := pub.mainCommit(t, hc); got != b {
		t.Fatalf("the publishing replica serves %s, want B", got)
	}
	// Generous margin for a loaded machine; the failure it guards against
	// is --redis-ttl (a minute).
	bound := ttl + 6*time.Second
	for {
		got := other.mainCommit(t, hc)
		if got == b {
			break
		}
		if time.Since(published) > bound {
			t.Fatalf("the other replica still serves %s %v after the 201; want B within --ref-cache-ttl %v (+ margin)", got, time.Since(published).Round(time.Millisecond), ttl)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the other replica served B %v after the 201 (--ref-cache-ttl %v)", time.Since(published).Round(time.Millisecond), ttl)

	proxy.setCut(false)
	deadline = time.Now().Add(20 * time.Second)
	for pub.metric(t, `uplink_redis_announce_retries_total{result="delivered"}`) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the publish Redis missed was not announced within 20s of Redis coming back")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
