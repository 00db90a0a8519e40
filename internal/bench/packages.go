package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/storage"
)

// The package set's scenarios, and uplink-s3 answering with a 302 to a
// presigned URL (--s3-redirect).
const (
	coldRun          = "package set, cold cache"
	redirectRun      = "package set, redirect"
	uplinkS3Redirect = "uplink-s3 (302 to S3)"
)

// packageSet is the cold and redirect scenarios' data: distinct packages
// of random bytes in the bucket's published commit. wrk fetches one URL
// over and over, so a Go client fetches these, each once per run.
type packageSet struct {
	files []string
	sums  [][32]byte
	size  int
	bufs  [][]byte // one per file, which every run reads its body into
}

// storeSet writes plan.setFiles packages of plan.setSize random bytes
// into d under the one-app data set's commit, published on main. No
// index lists them: uplink serves any file of a published commit.
func (b *bench) storeSet(ctx context.Context, d storage.Driver) (*packageSet, error) {
	n, size := b.plan.setFiles, b.plan.setSize
	b.logf("bench: adding a package set of %d × %d MiB to the bucket's commit", n, size>>20)
	set := &packageSet{files: make([]string, n), sums: make([][32]byte, n), size: size, bufs: make([][]byte, n)}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := range n {
		buf := randomBytes(size)
		set.files[i], set.sums[i], set.bufs[i] = fmt.Sprintf("set-%02d-1.0-r0.apk", i), sha256.Sum256(buf), buf
		key := artifact.Key(b.data.app, b.data.commit, arch, set.files[i])
		g.Go(func() error {
			_, err := d.Put(gctx, key, bytes.NewReader(buf), int64(len(buf)), storage.Condition{})
			return err
		})
	}
	return set, g.Wait()
}

// cold downloads the package set from a fresh uplink-s3 whose artifact
// cache is empty, and from versitygw.
func (b *bench) cold(ctx context.Context) ([]row, error) {
	return b.setScenario(ctx, coldRun, []string{uplinkS3Cold, nginxCache}, true)
}

// redirect downloads the package set through an uplink-s3 started with
// --s3-redirect (the client follows the 302 to S3), and from versitygw.
func (b *bench) redirect(ctx context.Context) ([]row, error) {
	rows, err := b.setScenario(ctx, redirectRun, []string{uplinkS3Redirect}, false, "--s3-redirect")
	want := float64(len(b.set.files) * b.plan.setRounds)
	for _, r := range rows {
		if err == nil && r.counts != nil && r.counts.redirects != want {
			err = fmt.Errorf("%s at %d connections: uplink answered %.0f of %.0f downloads with a 302", r.contender, r.conns, r.counts.redirects, want)
		}
	}
	return rows, err
}

// setScenario downloads the package set, at each connection count, from
// each contender (uplink-s3 started with extra, or nginx proxy_cache) and
// from versitygw.
func (b *bench) setScenario(ctx context.Context, name string, contenders []string, cold bool, extra ...string) ([]row, error) {
	b.logf("%s:", name)
	var specs []spec
	base := map[string]string{}
	for _, c := range contenders {
		s := spec{name: c, kind: uplinkS3}
		if c == nginxCache {
			s.kind = nginxCache
		}
		specs, base[c] = append(specs, s), direct
	}
	specs = append(specs, one(direct))
	var rows []row
	for _, n := range b.plan.setConns {
		for _, s := range specs {
			r, err := b.setRun(ctx, s, n, cold, extra...)
			if err != nil {
				return rows, fmt.Errorf("%s, %s: %w", name, s.name, err)
			}
			r.scenario = name
			rows = append(rows, r)
		}
	}
	fillRatios(rows, scenario{metric: megabytesPerSecond, base: base})
	return rows, nil
}

// emptyCache checks that an uplink's artifact cache holds nothing.
func (b *bench) emptyCache(ctx context.Context, c contender) error {
	if c.up == nil {
		return nil
	}
	m, err := b.scrape(ctx, c.up)
	if err != nil {
		return err
	}
	if !m.has("uplink_artifact_cache_bytes") {
		return errors.New("no uplink_artifact_cache_bytes in /metrics: is the artifact cache on?")
	}
	if v := m.sum("uplink_artifact_cache_bytes"); v != 0 {
		return fmt.Errorf("the artifact cache holds %.0f bytes before the cold run", v)
	}
	return nil
}

// setRun downloads the package set plan.setRounds times with conns
// workers from the contender s (an uplink with the extra flags, started
// afresh for each round): one round is too short to measure, and only a
// fresh uplink has an empty cache. A cold round checks that uplink's
// artifact cache is empty before, and waits for its fills after.
func (b *bench) setRun(ctx context.Context, s spec, conns int, cold bool, extra ...string) (row, error) {
	var total row
	for range b.plan.setRounds {
		r, err := b.setRound(ctx, s, conns, cold, extra...)
		if err != nil {
			return total, err
		}
		total.add(r)
	}
	total.p50, total.p99 = percentile(total.took, 0.50), percentile(total.took, 0.99)
	b.logRow(total)
	return total, nil
}

func (b *bench) setRound(ctx context.Context, s spec, conns int, cold bool, extra ...string) (row, error) {
	c, err := b.contender(ctx, s, "", extra...)
	defer func() {
		b.stopContenders([]contender{c})
		if c.ownDir != "" {
			os.RemoveAll(c.ownDir) // a cold round leaves its whole set in the cache
		}
	}()
	if err != nil {
		return row{}, err
	}
	if cold {
		if err := b.emptyCache(ctx, c); err != nil {
			return row{}, err
		}
	}
	b.settle(ctx)
	r, err := b.measure(ctx, c, conns, func() (load, error) { return b.fetchSet(ctx, c.dir, conns) })
	if err != nil || !cold || c.up == nil {
		return r, err
	}
	// A fill is renamed into place after its last byte was sent.
	r.counts.fills, err = b.waitCached(ctx, c, len(b.set.files))
	return r, err
}

// add merges r, another round of the same contender at the same conns,
// into t: sums, CPU weighted by time, the peak RSS (p50 and p99 are left
// to compute from took).
func (t *row) add(r row) {
	if t.elapsed == 0 {
		*t = r
		return
	}
	a, b := t.elapsed.Seconds(), r.elapsed.Seconds()
	mean := func(x, y float64) float64 { return (x*a + y*b) / (a + b) }
	t.serverCPU, t.backendCPU = mean(t.serverCPU, r.serverCPU), mean(t.backendCPU, r.backendCPU)
	t.otherCPU, t.clientCPU = mean(t.otherCPU, r.otherCPU), mean(t.clientCPU, r.clientCPU)
	t.requests, t.bytes, t.errors = t.requests+r.requests, t.bytes+r.bytes, t.errors+r.errors
	t.elapsed, t.took = t.elapsed+r.elapsed, append(t.took, r.took...)
	t.rssMB = max(t.rssMB, r.rssMB)
	if t.counts != nil && r.counts != nil {
		t.counts.hits += r.counts.hits
		t.counts.misses += r.counts.misses
		t.counts.fills += r.counts.fills
		t.counts.packageBytes += r.counts.packageBytes
		t.counts.redirects += r.counts.redirects
	}
}

// fetchSet downloads every file of the set from dir once, workers at a
// time, each body into its file's buffer. It checks the bodies' SHA-256
// after the clock stops, so that hashing costs the run nothing.
func (b *bench) fetchSet(ctx context.Context, dir string, workers int) (load, error) {
	set := b.set
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true},
		Timeout:   time.Minute,
	}
	defer client.CloseIdleConnections()
	took, got := make([]time.Duration, len(set.files)), make([]int, len(set.files))
	next := make(chan int)
	cpu, start := processCPU(), time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				t := time.Now()
				got[i] = fetchInto(ctx, client, dir+set.files[i], set.bufs[i])
				took[i] = time.Since(t)
			}
		})
	}
	for i := range set.files {
		next <- i
	}
	close(next)
	wg.Wait()
	l := load{elapsed: time.Since(start)}
	l.clientCPU = (processCPU() - cpu) / l.elapsed.Seconds()
	for i, n := range got {
		l.bytes += float64(max(n, 0))
		if n != set.size {
			l.errors++
			continue
		}
		if sha256.Sum256(set.bufs[i]) != set.sums[i] {
			return l, fmt.Errorf("GET %s: not the published bytes", dir+set.files[i])
		}
		l.requests++
		l.took = append(l.took, took[i])
	}
	l.p50, l.p99 = percentile(l.took, 0.50), percentile(l.took, 0.99)
	return l, ctx.Err()
}

// fetchInto GETs url into buf and returns how many body bytes came: -1
// for no 200 answer, more than len(buf) for a body too long.
func fetchInto(ctx context.Context, client *http.Client, url string, buf []byte) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return -1
	}
	resp, err := client.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return -1
	}
	n, err := io.ReadFull(resp.Body, buf)
	if err != nil {
		return n
	}
	var extra [1]byte
	m, _ := resp.Body.Read(extra[:])
	return n + m
}

// processCPU is the harness's own user and system time, in seconds.
func processCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// percentile is the nearest-rank p-th percentile of ds (0 for none).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	i := int(math.Ceil(float64(len(s))*p)) - 1
	return s[min(max(i, 0), len(s)-1)]
}
