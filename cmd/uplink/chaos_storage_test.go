package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/testenv"
)

// storageTarget is one URL of the chaos load and what it must answer.
type storageTarget struct {
	url string
	// cached: an index already in memory, or a commit's package already in
	// the local artifact cache: served whatever S3 does.
	cached bool
	body   []byte
}

// storageResult is one request of the load.
type storageResult struct {
	target     *storageTarget
	status     int
	retryAfter string
	took       time.Duration
	err        error // transport or body read error
	bodyOK     bool
}

// storageLoad runs workers on loopback for d (and at most limit requests),
// round-robin over targets.
func storageLoad(targets []*storageTarget, workers int, d time.Duration, limit int) []storageResult {
	hc := &http.Client{Timeout: 30 * time.Second} // far past any bound: a hang shows as a latency
	var mu sync.Mutex
	var out []storageResult
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; time.Now().Before(end); i++ {
				mu.Lock()
				full := len(out) >= limit
				mu.Unlock()
				if full {
					return
				}
				tg := targets[i%len(targets)]
				r := storageResult{target: tg}
				start := time.Now()
				resp, err := hc.Get(tg.url)
				if err == nil {
					var body []byte
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					r.status, r.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
					r.bodyOK = bytes.Equal(body, tg.body)
				}
				r.took, r.err = time.Since(start), err
				mu.Lock()
				out = append(out, r)
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	return out
}

// TestChaosStorage: the real binary on real Redis and S3, under a steady
// load of apk-like GETs from loopback clients, while S3 is killed, then
// frozen (SIGSTOP: connections accepted, nothing answered). Throughout,
// indexes already in memory answer 200 with the right bytes; every other
// request answers 503 with Retry-After, never a 500, never a hang past
// the storage deadline; once S3 is back, everything is served again
// within seconds.
func TestChaosStorage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	const timeout = time.Second // --storage-timeout
	// A request through a branch whose pointer has expired waits on storage
	// twice, each bounded by the timeout: reloading the pointer (then
	// served stale) and opening the file. The margin is for a loaded
	// 2-core machine.
	const bound = 2*timeout + 3*time.Second

	rdb := testenv.StartRedis(t)
	gw := testenv.StartS3(t)
	bucket := gw.NewBucket(t)
	listen, dist, admin := listenEnv(t)
	env := cliEnv(append(append(listen, s3Env(gw, gw.Endpoint, bucket, rdb.Addr)...), "UPLINK_STORAGE_TIMEOUT="+timeout.String())...)
	r := &replica{proc: startServe(t, t.TempDir(), env), api: client.New(admin, replicaToken), dist: dist}
	waitReady(t, r.proc, r.api)
	key := apktest.NewKey(t)
	a, b := sha("chaos-storage-a"), sha("chaos-storage-b")
	r.publish(t, key, a, "1.0-r0")
	r.publish(t, key, b, "2.0-r0") // main's head; 1.0 stays reachable through main from a

	base := func(ref string) string { return r.dist + "/distribution/" + ref + "/acme/hello/x86_64/" }
	targets := []*storageTarget{
		{url: base("main") + "APKINDEX.tar.gz", cached: true},
		{url: base(b) + "APKINDEX.tar.gz", cached: true},
		{url: base(a) + "APKINDEX.tar.gz", cached: true},
		// Read once below: from then on in the artifact cache, by its
		// commit and through a branch whose current commit has it alike.
		{url: base("main") + "hello-2.0-r0.apk", cached: true},
		{url: base(a) + "hello-1.0-r0.apk", cached: true},
		// From the branch's previous commit: S3 is asked first whether the
		// current commit has it.
		{url: base("main") + "hello-1.0-r0.apk"},
	}
	// Each answer once while S3 is up: the bytes to expect, and the
	// indexes in memory.
	for _, tg := range targets {
		resp, err := http.Get(tg.url)
		if err != nil {
			t.Fatal(err)
		}
		tg.body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || len(tg.body) == 0 {
			t.Fatalf("%s before any failure: %d, %v", tg.url, resp.StatusCode, err)
		}
	}

	const workers, maxRequests = 6, 20000
	// check asserts a phase's results; down: S3 is unavailable all along.
	check := func(phase string, results []storageResult, down bool) {
		t.Helper()
		counts := map[string]int{}
		slowest := map[bool]time.Duration{} // by cached
		bad := 0
		for _, res := range results {
			slowest[res.target.cached] = max(slowest[res.target.cached], res.took)
			counts[fmt.Sprintf("cached=%v %d", res.target.cached, res.status)]++
			var problem string
			switch {
			case res.err != nil:
				problem = res.err.Error()
			case res.took > bound:
				problem = fmt.Sprintf("answered after %v, past the bound %v", res.took, bound)
			case res.status == http.StatusOK && !res.bodyOK:
				problem = "200 with other bytes"
			case res.target.cached || !down:
				if res.status != http.StatusOK {
					problem = fmt.Sprintf("status %d, want 200", res.status)
				}
			case res.status != http.StatusServiceUnavailable || res.retryAfter == "":
				problem = fmt.Sprintf("status %d, Retry-After %q; want 503 with Retry-After", res.status, res.retryAfter)
			}
			if problem != "" {
				if bad++; bad <= 10 {
					t.Errorf("%s: %s: %s", phase, res.target.url, problem)
				}
			}
		}
		t.Logf("%s: %d requests, slowest cached index %v, other %v: %v", phase, len(results), slowest[true], slowest[false], counts)
		if bad > 10 {
			t.Errorf("%s: %d failed requests in all", phase, bad)
		}
		if counts["cached=true 200"] == 0 || down && counts["cached=false 503"] == 0 || !down && counts["cached=false 200"] == 0 {
			t.Errorf("%s: the load did not cover both kinds of request: %v", phase, counts)
		}
	}
	// recovered waits until every target answers 200 again.
	recovered := func(what string) {
		t.Helper()
		start := time.Now()
		for _, tg := range targets {
			for {
				resp, err := http.Get(tg.url)
				if err == nil {
					body, rerr := io.ReadAll(resp.Body)
					resp.Body.Close()
					if rerr == nil && resp.StatusCode == http.StatusOK && bytes.Equal(body, tg.body) {
						break
					}
				}
				if time.Since(start) > 10*time.Second {
					t.Fatalf("%s: %s not served 10s after S3 came back", what, tg.url)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		t.Logf("%s: served again %v after S3 came back", what, time.Since(start))
	}

	check("before", storageLoad(targets, workers, time.Second, maxRequests), false)

	gw.Stop()
	check("S3 killed", storageLoad(targets, workers, 4*time.Second, maxRequests), true)
	gw.Start()
	recovered("S3 restarted")
	check("after the restart", storageLoad(targets, workers, 1500*time.Millisecond, maxRequests), false)

	gw.Freeze()
	check("S3 frozen", storageLoad(targets, workers, 5*time.Second, maxRequests), true)
	gw.Thaw()
	recovered("S3 thawed")
	check("after the thaw", storageLoad(targets, workers, 1500*time.Millisecond, maxRequests), false)

	if r.proc.exited() {
		t.Fatalf("uplink exited:\n%s", r.proc.stderr.String())
	}
	if out := r.proc.stderr.String(); strings.Contains(out, "panic") {
		t.Errorf("uplink logged a panic:\n%s", out)
	}
}
