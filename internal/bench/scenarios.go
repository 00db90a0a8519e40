package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage/s3"
)

// Contender kinds, and the names of the contenders on the one-app data
// set in the table.
const (
	nginx    = "nginx"
	direct   = "versitygw"
	uplinkFS = "uplink-fs"
	uplinkS3 = "uplink-s3"
	// uplink-s3 on an artifact cache that holds the package before the
	// run, and on one that is empty at its start.
	uplinkS3Warm = "uplink-s3 (warm cache)"
	uplinkS3Cold = "uplink-s3 (cold cache)"
	nginxCache   = "nginx proxy_cache (cold cache)"
)

// memoryRun names the memory scenario.
const memoryRun = "package, 1,024 downloads"

// row is one contender at one connection count.
type row struct {
	scenario, contender string
	conns               int
	load
	serverCPU  float64 // cores the contender kept busy
	backendCPU float64 // and its S3 server, for uplink-s3
	viaS3      bool    // whether backendCPU was measured
	otherCPU   float64 // and everything else on the machine, steal included
	rssMB      float64 // uplink's peak RSS so far; 0 for other contenders
	vs         string  // what ratio compares with
	ratio      float64 // the scenario's metric over vs's at the same connection count
	counts     *counts // what uplink's /metrics counted during the run; nil for other contenders
}

// counts are the increase of uplink's counters during one row's run.
type counts struct {
	hits, misses, fills float64 // the artifact cache's
	packageBytes        float64 // package body bytes uplink sent
	redirects           float64 // package requests answered 302
}

// countsOf is what happened between two scrapes of uplink's /metrics.
func countsOf(before, after samples) *counts {
	delta := func(name string, labels ...string) float64 {
		return after.sum(name, labels...) - before.sum(name, labels...)
	}
	return &counts{
		hits:         delta("uplink_artifact_cache_hits_total"),
		misses:       delta("uplink_artifact_cache_misses_total"),
		fills:        delta("uplink_artifact_cache_fills_total"),
		packageBytes: delta("uplink_distribution_bytes_total", `file="package"`),
		redirects:    delta("uplink_distribution_requests_total", `file="package"`, `code="302"`),
	}
}

// String is what the progress log shows of c.
func (c *counts) String() string {
	if c == nil {
		return ""
	}
	return fmt.Sprintf("  cache hits %.0f misses %.0f fills %.0f, package bytes %s, 302s %.0f",
		c.hits, c.misses, c.fills, humanize.Comma(int64(c.packageBytes)), c.redirects)
}

// hitRatio is hits/(hits+misses), and false without either.
func (c *counts) hitRatio() (float64, bool) {
	if c == nil || c.hits+c.misses == 0 {
		return 0, false
	}
	return c.hits / (c.hits + c.misses), true
}

// metric is what ratios compare: requests/s, or MB/s for packages, of
// which few complete within a run (MB/s counts the partial ones too).
type metric struct {
	name string
	of   func(load) float64
}

var (
	requestsPerSecond  = metric{"req/s", load.rps}
	megabytesPerSecond = metric{"MB/s", load.mbps}
)

// spec names a contender: a kind of server on one of the data sets.
type spec struct {
	name  string
	kind  string
	large bool
}

func one(kind string) spec { return spec{name: kind, kind: kind} }

// scenario is one URL fetched from several contenders. They all run
// from its start to its end, and take turns: every contender is loaded
// at one connection count before any moves on to the next, so that
// compared rows are measured close together in time.
type scenario struct {
	name       string
	file       string
	sum        [32]byte
	conns      []int
	contenders []spec
	metric     metric
	profile    bool
	rounds     int // see plan.rounds; 0 is 1
	// warm fills uplink-s3's artifact cache with the file before the
	// runs (packages; the cache holds no index).
	warm bool
	// base names, per contender, the contender its ratio compares with.
	base map[string]string
}

// results is everything a run measured.
type results struct {
	rows      []row
	herdReads int
	herdCodes map[int]int
	elapsed   time.Duration
}

func (b *bench) measureAll(ctx context.Context) (*results, error) {
	if err := b.prepare(ctx); err != nil {
		return nil, err
	}
	res := &results{}
	add := func(rows []row, err error) error {
		res.rows = append(res.rows, rows...)
		return err
	}
	run := map[string]func() error{
		"memory": func() error { return add(b.memory(ctx)) },
		"herd": func() (err error) {
			res.herdReads, res.herdCodes, err = b.herd(ctx)
			return err
		},
		"scale":    func() error { return b.scale(ctx, add) },
		"cold":     func() error { return add(b.cold(ctx)) },
		"redirect": func() error { return add(b.redirect(ctx)) },
	}
	for _, sc := range b.scenarios() {
		run[sc.name] = func() error { return add(b.runScenario(ctx, sc)) }
	}
	for _, step := range steps {
		if !b.steps[step] {
			continue
		}
		if err := run[step](); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// scale measures the scale scenarios, on the large data set it builds.
func (b *bench) scale(ctx context.Context, add func([]row, error) error) error {
	if err := b.populateLarge(ctx); err != nil {
		return err
	}
	for _, sc := range b.scaleScenarios() {
		if err := add(b.runScenario(ctx, sc)); err != nil {
			return err
		}
	}
	return nil
}

// prepare writes the repository into uplink-fs's store and the bucket
// and publishes it, as CI that uploads to S3 itself does, adds the
// package set to the bucket's commit when a step needs it, then starts
// nginx on the files uplink-fs stored. Not through the admin API: the
// index's filler entries name packages that do not exist, which a
// publish through the API refuses (422 incomplete).
func (b *bench) prepare(ctx context.Context) error {
	dir, stores, closeStores, err := b.openStores(ctx, "uplink-fs", s3Bucket)
	if err != nil {
		return err
	}
	defer closeStores()
	b.fsDir = dir
	for _, d := range stores {
		if err := b.publishData(ctx, d); err != nil {
			return err
		}
	}
	if b.steps["cold"] || b.steps["redirect"] {
		if b.set, err = b.storeSet(ctx, stores[1]); err != nil {
			return err
		}
	}
	return b.startNginx(ctx, filepath.Join(b.fsDir, "storage"))
}

func (b *bench) scenarios() []scenario {
	p := b.plan
	return []scenario{{
		name: "index", file: artifact.IndexFile, sum: sha256.Sum256(b.data.index), conns: p.indexConns,
		contenders: []spec{one(nginx), one(uplinkFS), one(uplinkS3)}, metric: requestsPerSecond, profile: true, rounds: b.plan.rounds,
		base: map[string]string{uplinkFS: nginx, uplinkS3: nginx},
	}, {
		name: "package", file: b.data.pkgFile, sum: b.data.pkgSum, conns: p.packageConns,
		contenders: []spec{one(nginx), one(uplinkFS), one(direct), warm()}, metric: megabytesPerSecond, profile: true, rounds: b.plan.rounds,
		base: map[string]string{uplinkFS: nginx, uplinkS3Warm: direct}, warm: true,
	}}
}

func warm() spec { return spec{name: uplinkS3Warm, kind: uplinkS3} }

// scaleScenarios are the uplink contenders of scenarios() on the one-app
// data set and on the large one, each compared with itself.
func (b *bench) scaleScenarios() []scenario {
	var out []scenario
	for _, sc := range b.scenarios() {
		builds := humanize.Comma(int64(b.plan.scale.builds))
		sc.name = fmt.Sprintf("%s, 1 app vs %s builds", sc.name, builds)
		sc.conns, sc.profile = intersect(sc.conns, b.plan.scaleConns), false
		sc.contenders, sc.base = nil, map[string]string{}
		for _, kind := range []string{uplinkFS, uplinkS3} {
			small := spec{name: kind + ", 1 app", kind: kind}
			large := spec{name: fmt.Sprintf("%s, %s builds", kind, builds), kind: kind, large: true}
			sc.contenders = append(sc.contenders, small, large)
			sc.base[large.name] = small.name
		}
		out = append(out, sc)
	}
	return out
}

func intersect(a, b []int) []int {
	var out []int
	for _, v := range a {
		if slices.Contains(b, v) {
			out = append(out, v)
		}
	}
	return out
}

// contender is one server ready to be measured.
type contender struct {
	name    string
	kind    string
	url     string // of the scenario's file
	dir     string // of the repository: dir+file is a file's URL
	proc    *proc
	backend *proc   // the S3 server behind uplink-s3
	ownDir  string  // uplink-s3's data dir, its alone (the artifact cache is under it), or nginx proxy_cache's
	own     bool    // proc was started for this contender alone: stopped with it
	up      *uplink // nil unless uplink
}

func (b *bench) contender(ctx context.Context, s spec, file string, extra ...string) (contender, error) {
	key := artifact.Key(b.data.app, b.data.commit, arch, "")
	c := contender{name: s.name, kind: s.kind}
	var st store
	switch s.kind {
	case nginx:
		c.dir, c.proc = b.nginxURL+"/"+key, b.nginx
		c.url = c.dir + file
		return c, nil
	case direct:
		c.dir, c.proc = "http://"+b.s3Endpoint+"/"+s3Bucket+"/"+key, b.s3
		c.url = c.dir + file
		return c, nil
	case nginxCache:
		c.ownDir, c.backend = b.tempDir("nginx-cache-"), b.s3
		p, url, err := b.startNginxCache(ctx, c.ownDir)
		if err != nil {
			return c, err
		}
		c.proc, c.own = p, true
		c.dir = url + "/" + s3Bucket + "/" + key
		c.url = c.dir + file
		return c, nil
	case uplinkFS:
		st.dir = b.fsDir
		if s.large {
			st.dir = b.fsLargeDir
		}
	case uplinkS3:
		st.dir, st.bucket, c.backend = b.tempDir("uplink-s3-"), s3Bucket, b.s3
		c.ownDir = st.dir
		if s.large {
			st.bucket = s3Large
		}
	}
	u, err := b.startUplink(ctx, s.kind, st, extra...)
	if err != nil {
		return contender{}, err
	}
	c.dir = distribution.RepositoryURL(u.url, "main", b.data.app.String()) + "/" + arch + "/"
	c.url, c.proc, c.up = c.dir+file, u.proc, u
	return c, nil
}

func (b *bench) stopContenders(cs []contender) {
	for _, c := range cs {
		if c.up != nil {
			b.procs.stop(c.up.proc)
		}
		if c.own && c.proc != nil {
			b.procs.stop(c.proc)
		}
	}
}

func (b *bench) runScenario(ctx context.Context, sc scenario) ([]row, error) {
	b.logf("%s:", sc.name)
	cs, err := b.startContenders(ctx, sc)
	defer b.stopContenders(cs)
	if err != nil {
		return nil, err
	}
	var rows []row
	for _, n := range sc.conns {
		best := make([]*row, len(cs))
		for range max(sc.rounds, 1) {
			for i, c := range cs {
				b.settle(ctx)
				r, err := b.load(ctx, c, b.run(c.url, n, b.plan.duration))
				if err != nil {
					return nil, fmt.Errorf("%s, %s: %w", sc.name, c.name, err)
				}
				if best[i] == nil || sc.metric.of(r.load) > sc.metric.of(best[i].load) {
					best[i] = &r
				}
			}
		}
		for _, r := range best {
			r.scenario = sc.name
			rows = append(rows, *r)
		}
	}
	fillRatios(rows, sc)
	if sc.profile {
		err = b.profiles(ctx, sc, cs)
	}
	return rows, err
}

// startContenders starts every contender of sc, checks that each serves
// the published bytes and warms each up.
func (b *bench) startContenders(ctx context.Context, sc scenario) ([]contender, error) {
	var cs []contender
	for _, s := range sc.contenders {
		c, err := b.contender(ctx, s, sc.file)
		if err != nil {
			return cs, err
		}
		cs = append(cs, c)
		if err := verify(ctx, c.url, sc.sum); err != nil {
			return cs, err
		}
		if sc.warm {
			if _, err := b.waitCached(ctx, c, 1); err != nil {
				return cs, err
			}
		}
		if _, err := b.wrk(ctx, b.run(c.url, sc.conns[0], b.plan.warmup)); err != nil {
			return cs, err
		}
	}
	return cs, nil
}

// load runs wrk on c and records what it cost c.
func (b *bench) load(ctx context.Context, c contender, run wrkRun) (row, error) {
	r, err := b.measure(ctx, c, run.conns, func() (load, error) { return b.wrk(ctx, run) })
	if err == nil {
		b.logRow(r)
	}
	return r, err
}

// measure runs one load on c with conns clients and records what it
// cost c, and what uplink counted.
func (b *bench) measure(ctx context.Context, c contender, conns int, run func() (load, error)) (row, error) {
	var before samples
	if c.up != nil {
		var err error
		if before, err = b.scrape(ctx, c.up); err != nil {
			return row{}, err
		}
	}
	server, backend, machine := cpuSeconds(c.proc), cpuSeconds(c.backend), machineBusy()
	l, err := run()
	if err != nil {
		return row{}, err
	}
	r := row{contender: c.name, conns: conns, load: l, viaS3: c.backend != nil}
	secs := l.elapsed.Seconds()
	r.serverCPU = (cpuSeconds(c.proc) - server) / secs
	r.backendCPU = (cpuSeconds(c.backend) - backend) / secs
	r.otherCPU = max(0, (machineBusy()-machine)/secs-r.serverCPU-r.backendCPU-r.clientCPU)
	if c.up != nil {
		if r.rssMB, err = peakRSS(c.proc.pid()); err != nil {
			return r, err
		}
		after, err := b.scrape(ctx, c.up)
		if err != nil {
			return r, err
		}
		r.counts = countsOf(before, after)
	}
	return r, nil
}

// waitCached waits until uplink-s3's artifact cache has filled files
// files since uplink started, and returns how many it filled. A fill is
// renamed into place after the request that started it was answered.
func (b *bench) waitCached(ctx context.Context, c contender, files int) (float64, error) {
	if c.kind != uplinkS3 {
		return 0, nil
	}
	const bound = 10 * time.Second
	for deadline := time.Now().Add(bound); ; {
		m, err := b.scrape(ctx, c.up)
		if err != nil {
			return 0, err
		}
		filled := m.sum("uplink_artifact_cache_fills_total")
		if filled >= float64(files) {
			return filled, nil
		}
		if time.Now().After(deadline) {
			return filled, fmt.Errorf("%s: the artifact cache filled %.0f of %d files within %v", c.name, filled, files, bound)
		}
		select {
		case <-ctx.Done():
			return filled, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (b *bench) run(url string, conns int, d time.Duration) wrkRun {
	return wrkRun{url: url, conns: conns, d: d, timeout: b.plan.timeout}
}

func (b *bench) logRow(r row) {
	b.logf("  %-22s c=%-5d %6.0f req/s %7.1f MB/s  p50 %-9v p99 %-9v errors %d  cpu server %s client %.2f other %.2f  rss %.0f MB%s",
		r.contender, r.conns, r.rps(), r.mbps(), r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond),
		r.errors, serverCPU(r), r.clientCPU, r.otherCPU, r.rssMB, r.counts)
}

// verify fetches url once and checks the body's SHA-256: every
// contender must serve the same bytes.
func verify(ctx context.Context, url string, sum [32]byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || [32]byte(h.Sum(nil)) != sum {
		return fmt.Errorf("GET %s: %s, not the published bytes", url, resp.Status)
	}
	return nil
}

// fillRatios sets each compared row's ratio to its baseline's row at the
// same connection count.
func fillRatios(rows []row, sc scenario) {
	for i := range rows {
		r := &rows[i]
		base, ok := sc.base[r.contender]
		if !ok {
			continue
		}
		if b := find(rows, base, r.conns); b != nil && sc.metric.of(b.load) > 0 {
			r.vs, r.ratio = base+"; "+sc.metric.name, sc.metric.of(r.load)/sc.metric.of(b.load)
		}
	}
}

func find(rows []row, contender string, conns int) *row {
	for i := range rows {
		if r := &rows[i]; r.contender == contender && r.conns == conns {
			return r
		}
	}
	return nil
}

// memory runs plan.downloads concurrent package downloads against a
// fresh uplink of each driver and records its peak RSS.
func (b *bench) memory(ctx context.Context) ([]row, error) {
	b.logf("%s:", memoryRun)
	var rows []row
	for _, s := range []spec{one(uplinkFS), warm()} {
		c, err := b.contender(ctx, s, b.data.pkgFile)
		if err != nil {
			return nil, err
		}
		r, err := b.download(ctx, c)
		b.stopContenders([]contender{c})
		if err != nil {
			return nil, fmt.Errorf("memory, %s: %w", s.name, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func (b *bench) download(ctx context.Context, c contender) (row, error) {
	b.settle(ctx)
	if err := verify(ctx, c.url, b.data.pkgSum); err != nil {
		return row{}, err
	}
	if _, err := b.waitCached(ctx, c, 1); err != nil {
		return row{}, err
	}
	run := b.run(c.url, b.plan.downloads, b.plan.memDuration)
	run.timeout = time.Minute // no download may count as failed: each takes long
	r, err := b.load(ctx, c, run)
	r.scenario = memoryRun
	return r, err
}

// herd publishes an index no uplink has seen, then sends plan.herd
// concurrent first requests to a fresh uplink on S3 and Redis, and
// returns how many storage reads they caused.
func (b *bench) herd(ctx context.Context) (int, map[int]int, error) {
	d, err := s3.New(ctx, b.s3Config(s3Bucket))
	if err != nil {
		return 0, nil, err
	}
	app := artifact.App{Org: "acme", Name: "herd"}
	if err := publishDirect(ctx, d, ref.NewStore(d), app, commitOf(app.String(), 0), "main", b.data.index); err != nil {
		return 0, nil, err
	}
	// No background scan for operations may read storage meanwhile.
	st := store{dir: b.tempDir("uplink-herd-"), bucket: s3Bucket}
	u, err := b.startUplink(ctx, "uplink-herd", st, "--operation-scan", "1h")
	if err != nil {
		return 0, nil, err
	}
	defer b.procs.stop(u.proc)
	before, err := b.storageReads(ctx, u)
	if err != nil {
		return 0, nil, err
	}
	url := distribution.RepositoryURL(u.url, "main", app.String()) + "/" + arch + "/" + artifact.IndexFile
	codes := fireHerd(ctx, url, b.plan.herd, int64(len(b.data.index)))
	after, err := b.storageReads(ctx, u)
	if err != nil {
		return 0, nil, err
	}
	b.logf("cold herd: %d requests answered %s, made %d storage reads", b.plan.herd, statuses(codes), after-before)
	return after - before, codes, nil
}

// fireHerd sends n GETs at once, each on its own connection, and counts
// the answers by status (0: failed or short body).
func fireHerd(ctx context.Context, url string, n int, size int64) map[int]int {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true}}
	defer client.CloseIdleConnections()
	gate := make(chan struct{})
	codes := make(chan int, n)
	for range n {
		go func() {
			<-gate
			codes <- fetchStatus(ctx, client, url, size)
		}()
	}
	close(gate)
	counts := map[int]int{}
	for range n {
		counts[<-codes]++
	}
	return counts
}

func fetchStatus(ctx context.Context, client *http.Client, url string, size int64) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if n, err := io.Copy(io.Discard, resp.Body); err != nil || (resp.StatusCode == http.StatusOK && n != size) {
		return 0
	}
	return resp.StatusCode
}
