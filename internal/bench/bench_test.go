package main

import (
	"strings"
	"testing"
	"time"
)

const metricsPage = `# HELP uplink_artifact_cache_hits_total Package reads served from the local artifact cache.
# TYPE uplink_artifact_cache_hits_total counter
uplink_artifact_cache_hits_total 7
uplink_artifact_cache_hits_total_extra 100
uplink_distribution_bytes_total{file="index"} 1e+06
uplink_distribution_bytes_total{file="package"} 2.5e+07
uplink_distribution_requests_total{code="200",file="package",ref_kind="branch"} 3
uplink_distribution_requests_total{code="302",file="package",ref_kind="branch"} 4
uplink_distribution_requests_total{code="302",file="package",ref_kind="commit"} 5
`

func TestSamples(t *testing.T) {
	m, err := parseSamples(strings.NewReader(metricsPage))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"uplink_artifact_cache_hits_total", nil, 7}, // not the metric whose name it prefixes
		{"uplink_distribution_bytes_total", []string{`file="package"`}, 25e6},
		{"uplink_distribution_bytes_total", nil, 26e6},
		{"uplink_distribution_requests_total", []string{`file="package"`, `code="302"`}, 9},
		{"uplink_artifact_cache_misses_total", nil, 0},
	} {
		if got := m.sum(c.name, c.labels...); got != c.want {
			t.Errorf("sum(%s, %v) = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if m.has("uplink_artifact_cache_misses_total") || !m.has("uplink_distribution_bytes_total") {
		t.Error("has: wrong about which metrics the page holds")
	}
	if _, err := parseSamples(strings.NewReader("uplink_x_total NaNx\n")); err == nil {
		t.Error("a value that is no number was accepted")
	}
}

func TestCountsOf(t *testing.T) {
	before, _ := parseSamples(strings.NewReader("uplink_artifact_cache_hits_total 2\nuplink_artifact_cache_misses_total 1\n"))
	after, _ := parseSamples(strings.NewReader("uplink_artifact_cache_hits_total 11\nuplink_artifact_cache_misses_total 1\n"))
	c := countsOf(before, after)
	if r, ok := c.hitRatio(); !ok || r != 1 || c.hits != 9 || c.misses != 0 {
		t.Errorf("counts %+v, hit ratio %v %v; want 9 hits, 0 misses, ratio 1", *c, r, ok)
	}
	if _, ok := (&counts{}).hitRatio(); ok {
		t.Error("a run without cache reads has a hit ratio")
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if p50, p99 := percentile(ds, 0.5), percentile(ds, 0.99); p50 != 50*time.Millisecond || p99 != 99*time.Millisecond {
		t.Errorf("p50 %v p99 %v of 1..100 ms, want 50ms 99ms", p50, p99)
	}
	if p := percentile(ds[:1], 0.99); p != 100*time.Millisecond {
		t.Errorf("p99 of one download = %v, want it", p)
	}
	if p := percentile(nil, 0.5); p != 0 {
		t.Errorf("p50 of none = %v", p)
	}
}

func TestRowAdd(t *testing.T) {
	var total row
	total.add(row{load: load{requests: 2, bytes: 10, elapsed: time.Second, took: []time.Duration{1, 2}}, serverCPU: 1, rssMB: 30,
		counts: &counts{misses: 2, fills: 2}})
	total.add(row{load: load{requests: 1, bytes: 5, elapsed: 3 * time.Second, errors: 1, took: []time.Duration{3}}, serverCPU: 2, rssMB: 20,
		counts: &counts{misses: 1, fills: 1}})
	if total.requests != 3 || total.bytes != 15 || total.errors != 1 || total.elapsed != 4*time.Second || len(total.took) != 3 {
		t.Errorf("sums: %+v", total.load)
	}
	if total.serverCPU != 1.75 || total.rssMB != 30 {
		t.Errorf("server CPU %v (want 1.75, weighted by time), RSS %v (want the peak, 30)", total.serverCPU, total.rssMB)
	}
	if total.counts.misses != 3 || total.counts.fills != 3 {
		t.Errorf("counts %+v, want 3 misses and 3 fills", *total.counts)
	}
}

func TestChooseSteps(t *testing.T) {
	all, err := chooseSteps("")
	if err != nil || len(all) != len(steps) {
		t.Errorf("no -only: %v, %v; want every step", all, err)
	}
	some, err := chooseSteps("cold,redirect")
	if err != nil || len(some) != 2 || !some["cold"] || !some["redirect"] {
		t.Errorf("-only cold,redirect: %v, %v", some, err)
	}
	if _, err := chooseSteps("cold,warm"); err == nil {
		t.Error("-only with an unknown step was accepted")
	}
}

// A partial run's ratio line has the keys of its steps alone, and the
// cold and redirect keys compare the best rows of each contender.
func TestRatioLine(t *testing.T) {
	b := &bench{plan: plans[true], steps: map[string]bool{"cold": true, "redirect": true}}
	mb := func(scenario, contender string, conns int, mbps float64) row {
		return row{scenario: scenario, contender: contender, conns: conns, load: load{bytes: mbps * 1e6, elapsed: time.Second}}
	}
	res := &results{rows: []row{
		mb(coldRun, uplinkS3Cold, 4, 400), mb(coldRun, direct, 4, 1000),
		mb(coldRun, uplinkS3Cold, 16, 850), mb(coldRun, direct, 16, 900),
		mb(coldRun, nginxCache, 4, 300), mb(coldRun, nginxCache, 16, 200),
		mb(redirectRun, uplinkS3Redirect, 4, 950), mb(redirectRun, direct, 4, 1000),
		mb(redirectRun, uplinkS3Redirect, 16, 500), mb(redirectRun, direct, 16, 500),
	}}
	if got, want := b.ratioLine(res), "package_s3_cold_vs_direct=0.85 nginx_cache_cold_vs_direct=0.30 package_s3_redirect_vs_direct=0.95"; got != want {
		t.Errorf("ratio line %q, want %q", got, want)
	}
}
