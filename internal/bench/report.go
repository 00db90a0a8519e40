package main

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// report is the run's result, as BENCHMARKS.md and as the terminal
// output (the table and the ratio line, last).
type report struct{ markdown, stdout string }

func (b *bench) render(ctx context.Context, res *results) report {
	table := b.table(res.rows)
	notes := b.notes(res)
	line := b.ratioLine(res)
	var md strings.Builder
	fmt.Fprintf(&md, "# Benchmarks\n\n%s\n\n", b.intro(res))
	fmt.Fprintf(&md, "## Machine\n\n%s\n## Versions\n\n%s\n", keyValues(machine()), keyValues(b.versions(ctx)))
	fmt.Fprintf(&md, "## Results\n\n%s\n%s\n%s\n\n", table, notes, b.profileNote())
	fmt.Fprintf(&md, "## Ratios\n\n%s\n\n    %s\n", b.ratioNotes(), line)
	return report{markdown: md.String(), stdout: "\n" + table + "\n" + notes + "\n" + line + "\n"}
}

func (b *bench) intro(res *results) string {
	p := b.plan
	cmd := "make bench"
	if p.name == "quick" {
		cmd = "make bench QUICK=1"
	}
	if len(b.steps) < len(steps) {
		cmd += " ARGS='-only " + strings.Join(b.stepNames(), ",") + "'"
	}
	return fmt.Sprintf("`%s` (%s run) on %s, finished in %v. Every contender gets the same load: "+
		"wrk with %d threads and keep-alive connections on loopback, for %v per connection count after a %v warm-up, "+
		"--timeout %v. The index is a %s-byte signed APKINDEX.tar.gz fetched through the branch `main`; "+
		"the package a %s-byte .apk. nginx serves the very files uplink-fs stored (sendfile, open_file_cache, "+
		"access_log off, worker_processes auto); versitygw is the S3 server uplink-s3 reads from, fetched anonymously "+
		"(the bucket has a public-read bucket policy); uplink-s3 uses Redis. uplink runs with --access-log=false.",
		cmd, p.name, time.Now().UTC().Format("2006-01-02 15:04 MST"), res.elapsed.Round(time.Second),
		wrkThreads, p.duration, p.warmup, p.timeout, comma(len(b.data.index)), humanize.Comma(b.data.pkgSize))
}

// stepNames lists the steps the run measured, in run order.
func (b *bench) stepNames() []string {
	var out []string
	for _, s := range steps {
		if b.steps[s] {
			out = append(out, s)
		}
	}
	return out
}

func (b *bench) table(rows []row) string {
	var t strings.Builder
	t.WriteString("| scenario | contender | conns | req/s | MB/s | p50 | p99 | errors | server CPU | client CPU | other CPU | uplink peak RSS MB | ratio (vs) |\n")
	t.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&t, "| %s | %s | %d | %.0f | %.1f | %s | %s | %d | %s | %.2f | %.2f | %s | %s |\n",
			r.scenario, r.contender, r.conns, r.rps(), r.mbps(), ms(r, r.p50), ms(r, r.p99), r.errors,
			serverCPU(r), r.clientCPU, r.otherCPU, rss(r), ratio(r))
	}
	return t.String()
}

// ms formats a latency; a run in which no request completed has none.
func ms(r row, d time.Duration) string {
	if r.requests == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func serverCPU(r row) string {
	if !r.viaS3 {
		return fmt.Sprintf("%.2f", r.serverCPU)
	}
	return fmt.Sprintf("%.2f + %.2f versitygw", r.serverCPU, r.backendCPU)
}

func rss(r row) string {
	if r.rssMB == 0 {
		return ""
	}
	return fmt.Sprintf("%.0f", r.rssMB)
}

func ratio(r row) string {
	if r.vs == "" {
		return ""
	}
	return fmt.Sprintf("%.2f (%s)", r.ratio, r.vs)
}

// roundsNote says how an index or package row was chosen.
func roundsNote(n int) string {
	if n <= 1 {
		return ""
	}
	return fmt.Sprintf("In the index and package scenarios each contender is loaded %d times at each connection count, "+
		"in turn with the others, and its row is its best round (the same rule for nginx and versitygw as for uplink). ", n)
}

// notes explains the table's columns, then each scenario the run
// measured, and adds the herd and scale results.
func (b *bench) notes(res *results) string {
	paras := []string{fmt.Sprintf("Contenders of a scenario run side by side, idle but for their turn: each is loaded at one "+
		"connection count before any moves on to the next, so compared rows are measured seconds apart. "+
		roundsNote(b.plan.rounds)+
		"Ratio: requests/s (index) or MB/s (package) over the named contender's at the same connection count. "+
		"Packages compare MB/s because few 20 MB responses complete in a run: MB/s counts the partial ones too, "+
		"requests/s rounds them away. "+
		"CPU: cores kept busy during the run by the server (nginx: master and workers; uplink-s3: uplink + the versitygw "+
		"it reads from), by the client (wrk, or the harness's Go client in the package set rows), and by everything else "+
		"(the kernel's own threads, other processes, hypervisor steal); "+
		"the machine has %d: a row with much other CPU was disturbed. "+
		"Peak RSS: uplink's VmHWM since its start, read after the row's run; each uplink starts fresh for each scenario.",
		runtime.NumCPU())}
	if b.steps["package"] || b.steps["memory"] || b.steps["scale"] {
		paras = append(paras, "Warm cache: every uplink-s3 of the package rows (but the package set's) downloads the package "+
			"once before its runs and waits until its artifact cache has filled it (uplink_artifact_cache_fills_total), "+
			"so its runs read the local file, not S3. "+b.hitRatios(res.rows))
	}
	if b.steps["memory"] {
		paras = append(paras, fmt.Sprintf("The %s rows are %s concurrent downloads for %v: few finish, MB/s and RSS are the measures.",
			memoryRun, comma(b.plan.downloads), b.plan.memDuration))
	}
	if b.steps["cold"] || b.steps["redirect"] {
		paras = append(paras, b.setNotes(res.rows))
	}
	if b.steps["herd"] {
		paras = append(paras, fmt.Sprintf("Cold herd: %s concurrent first requests for an index no cache held (a fresh uplink-s3 with Redis), "+
			"answered %s, caused %d storage reads (uplink_storage_requests_total, op open+stat+list).",
			comma(b.plan.herd), statuses(res.herdCodes), res.herdReads))
	}
	if b.steps["scale"] {
		paras = append(paras, fmt.Sprintf("Scale: each uplink on the one-app data set against the same uplink on a store holding also "+
			"%s builds across %s apps and %s branches (and the measured app's main); large over one-app data set, best vs best: %s.",
			comma(b.plan.scale.builds), comma(b.plan.scale.apps), comma(b.plan.scale.branches), strings.Join(b.scaleRatios(res.rows), ", ")))
	}
	return strings.Join(paras, "\n\n") + "\n"
}

// hitRatios reports the artifact cache's hit ratio of each warm uplink-s3
// row.
func (b *bench) hitRatios(rows []row) string {
	var out []string
	for _, r := range rows {
		if hr, ok := r.counts.hitRatio(); ok && r.scenario != coldRun {
			out = append(out, fmt.Sprintf("%s, %s at %d connections: %.1f%% (%.0f hits, %.0f misses)",
				r.scenario, r.contender, r.conns, 100*hr, r.counts.hits, r.counts.misses))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "Hit ratio, hits/(hits+misses) of uplink_artifact_cache_{hits,misses}_total scraped before and after each run: " +
		strings.Join(out, "; ") + "."
}

// setNotes explains the package set's scenarios and what uplink counted
// during them.
func (b *bench) setNotes(rows []row) string {
	p := b.plan
	text := fmt.Sprintf("Package set: %d distinct packages of %s random bytes in the measured commit, each downloaded once per round "+
		"by the harness's Go client with as many workers as the row's conns, through the branch main (versitygw: by key). "+
		"A row is %d rounds, each against an uplink started afresh; bodies are read into memory and their SHA-256 checked "+
		"after the clock stops. MB/s is every body byte over the rounds' summed wall time; p50 and p99 are those of the "+
		"single downloads; CPU is averaged over the rounds.",
		p.setFiles, humanize.Comma(int64(p.setSize)), p.setRounds)
	if b.steps["cold"] {
		text += " Cold cache: each " + uplinkS3Cold + " row is a fresh uplink-s3 whose artifact cache is empty at its start " +
			"(uplink_artifact_cache_bytes 0), so every download is a first read from S3, streamed to the client as it fills the cache; " +
			"its cache counted " + perRow(rows, coldRun, uplinkS3Cold, func(c *counts) string {
			return fmt.Sprintf("%.0f misses, %.0f hits and %.0f fills", c.misses, c.hits, c.fills)
		}) + ". " + nginxCache + " is the same first downloads through nginx as a caching proxy in front of " +
			"versitygw (proxy_cache with proxy_cache_lock, keep-alive to versitygw, 16 × 256 KiB proxy buffers), a fresh nginx " +
			"with an empty cache for each round: what any cache that keeps a copy costs on this machine, where versitygw, the " +
			"proxy and the client share the same cores."
	}
	if b.steps["redirect"] {
		text += " Redirect: " + uplinkS3Redirect + " is uplink-s3 with --s3-redirect, whose answer to each download is a 302 " +
			"to a presigned versitygw URL that the client follows, so the bytes go from versitygw to the client; uplink answered " +
			perRow(rows, redirectRun, uplinkS3Redirect, func(c *counts) string {
				return fmt.Sprintf("%.0f × 302 and sent %s package body bytes (uplink_distribution_bytes_total{file=\"package\"})",
					c.redirects, humanize.Comma(int64(c.packageBytes)))
			}) + "."
	}
	return text
}

// perRow describes what uplink counted in each row of a contender.
func perRow(rows []row, scenario, contender string, describe func(*counts) string) string {
	var out []string
	for _, r := range rows {
		if r.scenario == scenario && r.contender == contender && r.counts != nil {
			out = append(out, fmt.Sprintf("%s at %d connections", describe(r.counts), r.conns))
		}
	}
	return strings.Join(out, ", ")
}

func comma(n int) string { return humanize.Comma(int64(n)) }

// statuses lists how many answers had each status (0: none, or cut short).
func statuses(codes map[int]int) string {
	var out []string
	for _, code := range slices.Sorted(maps.Keys(codes)) {
		out = append(out, fmt.Sprintf("%s × %d", comma(codes[code]), code))
	}
	return strings.Join(out, ", ")
}

func (b *bench) scaleRatios(rows []row) []string {
	var out []string
	for _, sc := range b.scaleScenarios() {
		for large, small := range sc.base {
			r := best(rows, sc.name, large, sc.conns, sc.metric) / best(rows, sc.name, small, sc.conns, sc.metric)
			scenario, _, _ := strings.Cut(sc.name, ",")
			kind, _, _ := strings.Cut(large, ",")
			out = append(out, fmt.Sprintf("%s %s %.2f (%s)", scenario, kind, r, sc.metric.name))
		}
	}
	slices.Sort(out)
	return out
}

// best is the highest value of m of a contender in a scenario, among
// the connection counts conns.
func best(rows []row, scenario, contender string, conns []int, m metric) float64 {
	v := 0.0
	for _, r := range rows {
		if r.scenario == scenario && r.contender == contender && slices.Contains(conns, r.conns) {
			v = math.Max(v, m.of(r.load))
		}
	}
	return v
}

func (b *bench) profileNote() string {
	switch {
	case !b.plan.profile:
		return "Profiles: none in a quick run."
	case !b.pprof:
		return "Profiles: none, this uplink has no --pprof flag."
	}
	rel, _ := filepath.Rel(b.root, b.outDir)
	return fmt.Sprintf("Profiles: CPU and allocations of each uplink during an extra %v run at %d connections "+
		"of each scenario, in %s/<scenario>-<contender>-{cpu,allocs}.pprof (go tool pprof).",
		b.plan.duration, b.plan.profileConns, rel)
}

func (b *bench) ratioNotes() string {
	return "Uplink over the baseline measured in the same run, each at its best connection count (best vs best): " +
		"requests/s for the index, MB/s for the package (the same quantity for 20 MB bodies, without rounding away " +
		"unfinished responses). index_vs_nginx: the lower of uplink-fs and uplink-s3 against nginx; package_vs_nginx: " +
		"uplink-fs against nginx; package_s3_vs_direct: uplink-s3 on a warm artifact cache against an anonymous GET " +
		"straight from versitygw; package_s3_cold_vs_direct: the package set's first downloads through uplink-s3 with an " +
		"empty artifact cache against the same downloads from versitygw (nginx_cache_cold_vs_direct, the same for nginx " +
		"proxy_cache, is a reference, not a target); package_s3_redirect_vs_direct: the package set " +
		"through uplink-s3 --s3-redirect (302, then versitygw) against versitygw alone; " +
		"herd_reads: storage reads caused by the cold herd; rss_mb: the higher peak RSS of uplink-fs and uplink-s3 " +
		"during the concurrent package downloads. A run with -only has the keys of its steps alone."
}

// ratioLine is the run's summary, one key=value per target, for the
// steps the run measured.
func (b *bench) ratioLine(res *results) string {
	rows, idx, pkg, set := res.rows, b.plan.indexConns, b.plan.packageConns, b.plan.setConns
	rps, mbps := requestsPerSecond, megabytesPerSecond
	vs := func(scenario, contender, base string, conns []int, m metric) float64 {
		return best(rows, scenario, contender, conns, m) / best(rows, scenario, base, conns, m)
	}
	var out []string
	add := func(step, key string, v string) {
		if b.steps[step] {
			out = append(out, key+"="+v)
		}
	}
	uplinkIndex := math.Min(best(rows, "index", uplinkFS, idx, rps), best(rows, "index", uplinkS3, idx, rps))
	add("index", "index_vs_nginx", twoPlaces(uplinkIndex/best(rows, "index", nginx, idx, rps)))
	add("package", "package_vs_nginx", twoPlaces(vs("package", uplinkFS, nginx, pkg, mbps)))
	add("package", "package_s3_vs_direct", twoPlaces(vs("package", uplinkS3Warm, direct, pkg, mbps)))
	add("cold", "package_s3_cold_vs_direct", twoPlaces(vs(coldRun, uplinkS3Cold, direct, set, mbps)))
	add("cold", "nginx_cache_cold_vs_direct", twoPlaces(vs(coldRun, nginxCache, direct, set, mbps)))
	add("redirect", "package_s3_redirect_vs_direct", twoPlaces(vs(redirectRun, uplinkS3Redirect, direct, set, mbps)))
	add("herd", "herd_reads", fmt.Sprint(res.herdReads))
	peak := 0.0
	for _, r := range rows {
		if r.scenario == memoryRun {
			peak = math.Max(peak, r.rssMB)
		}
	}
	add("memory", "rss_mb", fmt.Sprintf("%.0f", peak))
	return strings.Join(out, " ")
}

func twoPlaces(v float64) string { return fmt.Sprintf("%.2f", v) }

type keyValue struct{ key, value string }

func keyValues(kvs []keyValue) string {
	var t strings.Builder
	t.WriteString("| | |\n|---|---|\n")
	for _, kv := range kvs {
		fmt.Fprintf(&t, "| %s | %s |\n", kv.key, kv.value)
	}
	return t.String()
}

func machine() []keyValue {
	return []keyValue{
		{"CPUs (nproc)", fmt.Sprint(runtime.NumCPU())},
		{"CPU", procField("/proc/cpuinfo", "model name")},
		{"memory", memTotal()},
		{"kernel", readTrimmed("/proc/sys/kernel/osrelease")},
	}
}

// procField returns the value of the first "name : value" line.
func procField(path, name string) string {
	b, _ := os.ReadFile(path)
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() string {
	var kb float64
	if _, err := fmt.Sscan(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal"), " kB"), &kb); err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%.1f GiB", kb/(1<<20))
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func (b *bench) versions(ctx context.Context) []keyValue {
	return []keyValue{
		{"go", runtime.Version()},
		{"nginx", b.firstLine(ctx, b.tools.nginx, "-v")},
		{"wrk", cutAt(b.firstLine(ctx, b.tools.wrk, "-v"), " Copyright")},
		{"redis", cutAt(b.firstLine(ctx, b.tools.redis, "--version"), " sha=")},
		{"versitygw", b.moduleVersion(ctx, b.tools.versitygw)},
		{"uplink", b.commit(ctx)},
	}
}

// firstLine is the first line a command prints (wrk -v exits 1).
func (b *bench) firstLine(ctx context.Context, name string, args ...string) string {
	out, _ := b.command(ctx, name, args...)
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	if line == "" {
		return "unknown"
	}
	return line
}

func cutAt(s, sep string) string {
	before, _, _ := strings.Cut(s, sep)
	return before
}

// moduleVersion reads the main module's version from a Go binary.
func (b *bench) moduleVersion(ctx context.Context, bin string) string {
	out, _ := b.command(ctx, "go", "version", "-m", bin)
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "mod" {
			return f[1] + " " + f[2]
		}
	}
	return "unknown"
}

// commit is HEAD's short hash, marked when the work tree differs (but
// for the profiles this run wrote).
func (b *bench) commit(ctx context.Context) string {
	out, err := b.command(ctx, "git", "rev-parse", "--short", "HEAD")
	if err != nil {
		return "unknown"
	}
	c := "commit " + strings.TrimSpace(out)
	diff := []string{"diff", "--quiet", "HEAD", "--", "."}
	if rel, err := filepath.Rel(b.root, b.outDir); err == nil && !strings.HasPrefix(rel, "..") {
		diff = append(diff, ":(exclude)"+rel)
	}
	if _, err := b.command(ctx, "git", diff...); err != nil {
		c += " with uncommitted changes"
	}
	return c
}
