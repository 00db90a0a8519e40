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
	for _, sc := range b.scenarios() {
		rows, err := b.runScenario(ctx, sc)
		if err != nil {
			return nil, err
		}
		res.rows = append(res.rows, rows...)
	}
	mem, err := b.memory(ctx)
	if err != nil {
		return nil, err
	}
	res.rows = append(res.rows, mem...)
	if res.herdReads, res.herdCodes, err = b.herd(ctx); err != nil {
		return nil, err
	}
	if err := b.populateLarge(ctx); err != nil {
		return nil, err
	}
	for _, sc := range b.scaleScenarios() {
		rows, err := b.runScenario(ctx, sc)
		if err != nil {
			return nil, err
		}
		res.rows = append(res.rows, rows...)
	}
	return res, nil
}

// prepare writes the repository into uplink-fs's store and the bucket
// and publishes it, as CI that uploads to S3 itself does, then starts
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
	return b.startNginx(ctx, filepath.Join(b.fsDir, "storage"))
}

func (b *bench) scenarios() []scenario {
	p := b.plan
	return []scenario{{
		name: "index", file: artifact.IndexFile, sum: sha256.Sum256(b.data.index), conns: p.indexConns,
		contenders: []spec{one(nginx), one(uplinkFS), one(uplinkS3)}, metric: requestsPerSecond, profile: true,
		base: map[string]string{uplinkFS: nginx, uplinkS3: nginx},
	}, {
		name: "package", file: b.data.pkgFile, sum: b.data.pkgSum, conns: p.packageConns,
		contenders: []spec{one(nginx), one(uplinkFS), one(direct), one(uplinkS3)}, metric: megabytesPerSecond, profile: true,
		base: map[string]string{uplinkFS: nginx, uplinkS3: direct},
	}}
}

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
	url     string
	proc    *proc
	backend *proc   // the S3 server behind uplink-s3
	up      *uplink // nil unless uplink
}

func (b *bench) contender(ctx context.Context, s spec, file string, extra ...string) (contender, error) {
	key := artifact.Key(b.data.app, b.data.commit, arch, file)
	c := contender{name: s.name}
	var st store
	switch s.kind {
	case nginx:
		c.url, c.proc = b.nginxURL+"/"+key, b.nginx
		return c, nil
	case direct:
		c.url, c.proc = "http://"+b.s3Endpoint+"/"+s3Bucket+"/"+key, b.s3
		return c, nil
	case uplinkFS:
		st.dir = b.fsDir
		if s.large {
			st.dir = b.fsLargeDir
		}
	case uplinkS3:
		st.dir, st.bucket, c.backend = b.tempDir("uplink-s3-"), s3Bucket, b.s3
		if s.large {
			st.bucket = s3Large
		}
	}
	u, err := b.startUplink(ctx, s.kind, st, extra...)
	if err != nil {
		return contender{}, err
	}
	c.url = distribution.RepositoryURL(u.url, "main", b.data.app.String()) + "/" + arch + "/" + file
	c.proc, c.up = u.proc, u
	return c, nil
}

func (b *bench) stopContenders(cs []contender) {
	for _, c := range cs {
		if c.up != nil {
			b.procs.stop(c.up.proc)
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
		for _, c := range cs {
			b.settle(ctx)
			r, err := b.load(ctx, c, b.run(c.url, n, b.plan.duration))
			if err != nil {
				return nil, fmt.Errorf("%s, %s: %w", sc.name, c.name, err)
			}
			r.scenario = sc.name
			rows = append(rows, r)
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
		if _, err := b.wrk(ctx, b.run(c.url, sc.conns[0], b.plan.warmup)); err != nil {
			return cs, err
		}
	}
	return cs, nil
}

// load runs wrk on c and records what it cost c.
func (b *bench) load(ctx context.Context, c contender, run wrkRun) (row, error) {
	server, backend, machine := cpuSeconds(c.proc), cpuSeconds(c.backend), machineBusy()
	l, err := b.wrk(ctx, run)
	if err != nil {
		return row{}, err
	}
	r := row{contender: c.name, conns: run.conns, load: l, viaS3: c.backend != nil}
	secs := l.elapsed.Seconds()
	r.serverCPU = (cpuSeconds(c.proc) - server) / secs
	r.backendCPU = (cpuSeconds(c.backend) - backend) / secs
	r.otherCPU = max(0, (machineBusy()-machine)/secs-r.serverCPU-r.backendCPU-r.wrkCPU)
	if c.up != nil {
		r.rssMB, err = peakRSS(c.proc.pid())
	}
	b.logRow(r)
	return r, err
}

func (b *bench) run(url string, conns int, d time.Duration) wrkRun {
	return wrkRun{url: url, conns: conns, d: d, timeout: b.plan.timeout}
}

func (b *bench) logRow(r row) {
	b.logf("  %-22s c=%-5d %6.0f req/s %7.1f MB/s  p50 %-9v p99 %-9v errors %d  cpu server %s wrk %.2f other %.2f  rss %.0f MB",
		r.contender, r.conns, r.rps(), r.mbps(), r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond),
		r.errors, serverCPU(r), r.wrkCPU, r.otherCPU, r.rssMB)
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
	for _, kind := range []string{uplinkFS, uplinkS3} {
		c, err := b.contender(ctx, one(kind), b.data.pkgFile)
		if err != nil {
			return nil, err
		}
		r, err := b.download(ctx, c)
		b.stopContenders([]contender{c})
		if err != nil {
			return nil, fmt.Errorf("memory, %s: %w", kind, err)
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
