// Command bench measures uplink side by side with nginx (files from disk)
// and versitygw (S3 objects), with identical wrk loads on loopback, and
// writes the table to BENCHMARKS.md. `make bench` installs what it needs
// and runs it; `make bench QUICK=1` runs a smaller version, and
// `make bench ARGS='-only cold,redirect'` only the steps named.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// plan is how much to measure.
type plan struct {
	name         string
	indexConns   []int
	packageConns []int
	scaleConns   []int
	duration     time.Duration
	warmup       time.Duration
	timeout      time.Duration
	profile      bool // save pprof profiles
	profileConns int
	downloads    int
	memDuration  time.Duration
	herd         int
	scale        scale
	indexSize    int
	packageSize  int
	// The package set of the cold and redirect scenarios: setFiles
	// distinct packages of setSize bytes, fetched setRounds times by
	// setConns workers.
	setFiles, setSize, setRounds int
	setConns                     []int
	// rounds: each contender of the index and package scenarios is
	// loaded this many times at each connection count, in turn with the
	// others, and its best round is its row: one slow round (the
	// hypervisor, a page-cache writeback) then cannot decide a ratio.
	rounds int
}

var plans = map[bool]plan{
	false: {
		name:       "full",
		indexConns: []int{16, 128, 1024}, packageConns: []int{16, 128}, scaleConns: []int{128, 1024},
		duration: 5 * time.Second, warmup: time.Second, timeout: 10 * time.Second, profile: true, profileConns: 128,
		downloads: 1024, memDuration: 10 * time.Second, herd: 1000,
		scale:     scale{builds: 10000, apps: 500, branches: 2000},
		indexSize: 1 << 20, packageSize: 20 << 20,
		setFiles: 24, setSize: 8 << 20, setRounds: 8, setConns: []int{4, 16}, rounds: 3,
	},
	true: {
		name:       "quick",
		indexConns: []int{16, 128, 1024}, packageConns: []int{16, 128}, scaleConns: []int{128},
		duration: 2 * time.Second, warmup: time.Second, timeout: 10 * time.Second, profileConns: 128,
		downloads: 1024, memDuration: 3 * time.Second, herd: 1000,
		scale:     scale{builds: 500, apps: 50, branches: 200},
		indexSize: 1 << 20, packageSize: 20 << 20,
		setFiles: 12, setSize: 8 << 20, setRounds: 2, setConns: []int{4, 16}, rounds: 1,
	},
}

// steps are the parts of a run that -only can choose, in run order.
var steps = []string{"index", "package", "memory", "herd", "scale", "cold", "redirect"}

func main() {
	quick := flag.Bool("quick", false, "a smaller run (about 2 minutes)")
	report := flag.String("report", "BENCHMARKS.md", "where to write the report, relative to the module root; a run with -only writes none unless set")
	out := flag.String("out", "internal/bench/out", "where to save pprof profiles, relative to the module root")
	only := flag.String("only", "", "run only these comma-separated steps, of "+strings.Join(steps, ","))
	duration := flag.Duration("duration", 0, "each wrk load's duration, instead of the plan's (whole seconds)")
	flag.Parse()
	p := plans[*quick]
	if *duration > 0 {
		p.duration, p.memDuration = *duration, *duration
	}
	chosen, err := chooseSteps(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if *only != "" && !flagSet("report") {
		*report = "" // a partial run must not replace the full report
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	text, err := run(ctx, p, chosen, *report, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Print(text)
}

// chooseSteps parses -only; empty means every step.
func chooseSteps(only string) (map[string]bool, error) {
	chosen := map[string]bool{}
	if only == "" {
		for _, s := range steps {
			chosen[s] = true
		}
		return chosen, nil
	}
	for s := range strings.SplitSeq(only, ",") {
		if !slices.Contains(steps, s) {
			return nil, fmt.Errorf("-only: no step %q (steps: %s)", s, strings.Join(steps, ","))
		}
		chosen[s] = true
	}
	return chosen, nil
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// bench is one run's state.
type bench struct {
	plan   plan
	steps  map[string]bool // what this run measures
	root   string          // the module root
	tmp    string
	outDir string
	tools  tools
	procs  procs
	token  string
	pprof  bool
	starts int // uplink starts, for distinct Redis prefixes
	began  time.Time

	redisURL, s3Endpoint, nginxURL string
	nginx, s3                      *proc
	data                           *dataset
	fsDir                          string // uplink-fs's data dir; nginx serves its storage/
	fsLargeDir                     string // uplink-fs's on the large data set
	set                            *packageSet
}

// run measures everything, stops every process it started, writes the
// report and returns what to print.
func run(ctx context.Context, p plan, chosen map[string]bool, reportPath, outDir string) (string, error) {
	b, err := newBench(p, outDir)
	if err != nil {
		return "", err
	}
	b.steps = chosen
	defer b.close()
	if err := b.setup(ctx); err != nil {
		return "", err
	}
	res, err := b.measureAll(ctx)
	if err != nil {
		return "", err
	}
	res.elapsed = time.Since(b.began)
	text := b.render(ctx, res)
	if reportPath == "" {
		return text.stdout, nil
	}
	return text.stdout, os.WriteFile(b.path(reportPath), []byte(text.markdown), 0o644)
}

func newBench(p plan, outDir string) (*bench, error) {
	raiseFileLimit()
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "uplink-bench-")
	if err != nil {
		return nil, err
	}
	b := &bench{plan: p, root: root, tmp: tmp, token: rand.Text(), began: time.Now()}
	b.outDir = b.path(outDir)
	return b, nil
}

// path resolves p against the module root.
func (b *bench) path(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(b.root, p)
}

func (b *bench) setup(ctx context.Context) error {
	b.logf("bench: %s run, working in %s", b.plan.name, b.tmp)
	var err error
	if b.tools, err = b.findTools(ctx); err != nil {
		return err
	}
	b.pprof = b.hasPprof(ctx)
	b.logf("bench: generating a %d KiB index and a %d MiB package", b.plan.indexSize>>10, b.plan.packageSize>>20)
	if b.data, err = generate(b.mkdir("repo"), b.plan.indexSize, b.plan.packageSize); err != nil {
		return err
	}
	b.logf("bench: index %d bytes, package %s %d bytes", len(b.data.index), b.data.pkgFile, b.data.pkgSize)
	if err := b.startRedis(ctx); err != nil {
		return err
	}
	return b.startS3(ctx)
}

func (b *bench) close() {
	b.procs.stopAll()
	os.RemoveAll(b.tmp)
}

// tools are the binaries the harness runs.
type tools struct{ uplink, nginx, wrk, redis, versitygw string }

func (b *bench) findTools(ctx context.Context) (tools, error) {
	var t tools
	var err error
	for _, f := range []struct {
		dst  *string
		name string
	}{{&t.nginx, "nginx"}, {&t.wrk, "wrk"}, {&t.redis, "redis-server"}} {
		if *f.dst, err = exec.LookPath(f.name); err != nil {
			return t, fmt.Errorf("%s not found: run scripts/install-bench-deps.sh (or make bench)", f.name)
		}
	}
	if t.versitygw, err = b.findVersitygw(ctx); err != nil {
		return t, err
	}
	t.uplink = filepath.Join(b.tmp, "uplink")
	b.logf("bench: building uplink")
	if out, err := b.command(ctx, "go", "build", "-o", t.uplink, "./cmd/uplink"); err != nil {
		return t, fmt.Errorf("go build ./cmd/uplink: %v\n%s", err, out)
	}
	return t, nil
}

func (b *bench) findVersitygw(ctx context.Context) (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	gopath, err := b.command(ctx, "go", "env", "GOPATH")
	if err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(gopath)) {
			p := filepath.Join(dir, "bin", "versitygw")
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("versitygw not found in PATH or $(go env GOPATH)/bin: run scripts/install-bench-deps.sh")
}

// hasPprof tells whether this uplink has the --pprof flag; without it
// the run goes on without profiles.
func (b *bench) hasPprof(ctx context.Context) bool {
	out, _ := b.command(ctx, b.tools.uplink, "serve", "-h")
	if strings.Contains(out, "-pprof") {
		return true
	}
	b.logf("bench: WARNING: uplink has no --pprof flag: no profiles this run")
	return false
}

// raiseFileLimit lifts the open-files limit to its maximum, for this
// process and the servers and wrk it starts (1,024 connections each).
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run the harness inside the uplink module (go env GOMOD: %q, %v)", mod, err)
	}
	return filepath.Dir(mod), nil
}

// command runs a short command in the module root and returns its output.
func (b *bench) command(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = b.root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (b *bench) mkdir(name string) string {
	p := filepath.Join(b.tmp, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		panic(err)
	}
	return p
}

func (b *bench) tempDir(prefix string) string {
	p, err := os.MkdirTemp(b.tmp, prefix)
	if err != nil {
		panic(err)
	}
	return p
}

// logf reports progress on stderr, stamped with the time since start.
func (b *bench) logf(format string, args ...any) {
	d := time.Since(b.began).Truncate(time.Second)
	fmt.Fprintf(os.Stderr, "[%02d:%02d] "+format+"\n", append([]any{int(d.Minutes()), int(d.Seconds()) % 60}, args...)...)
}
