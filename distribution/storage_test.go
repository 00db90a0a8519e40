package distribution_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/cache"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/internal/testenv"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/s3"
)

// s3Env is a distribution handler on real S3 (versitygw), reached through
// a proxy that counts the S3 requests and can cut responses, served with
// the middleware uplink's listener has (request ids, Echo's Recover).
type s3Env struct {
	gw      *testenv.S3
	proxy   *testenv.CutProxy
	srv     *httptest.Server
	reg     *prometheus.Registry
	logs    *testenv.Buffer
	timeout time.Duration
	commits []string // published, each with pkg and an index
	pkg     []byte
	index   []byte
}

const pkgFile = "hello-1.0-r0.apk"

var s3App = artifact.App{Org: "acme", Name: "hello"}

func newS3Env(t *testing.T, timeout time.Duration, pkgSize int) *s3Env {
	t.Helper()
	ctx := t.Context()
	gw := testenv.StartS3(t)
	bucket := gw.NewBucket(t)
	driver := func(endpoint string) storage.Driver {
		d, err := s3.New(ctx, s3.Config{Endpoint: endpoint, Bucket: bucket, Region: gw.Region,
			AccessKey: gw.AccessKey, SecretKey: gw.SecretKey, PathStyle: true})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	env := &s3Env{gw: gw, proxy: testenv.StartCutProxy(t, gw.Endpoint), reg: prometheus.NewRegistry(),
		logs: &testenv.Buffer{}, timeout: timeout}
	direct, served := driver(gw.Endpoint), driver(env.proxy.Addr)

	rng := rand.New(rand.NewPCG(1, 2))
	env.pkg = make([]byte, pkgSize)
	for i := range env.pkg {
		env.pkg[i] = byte(rng.Uint32())
	}
	env.index = bytes.Repeat([]byte("index "), 1000)
	store := ref.NewStore(direct)
	for _, label := range []string{"one", "two"} {
		commit := fmt.Sprintf("%040x", label)
		for file, data := range map[string][]byte{pkgFile: env.pkg, artifact.IndexFile: env.index} {
			if _, err := direct.Put(ctx, artifact.Key(s3App, commit, "x86_64", file), bytes.NewReader(data), int64(len(data)), storage.Condition{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := store.Publish(ctx, s3App, ref.PublishRequest{Commit: commit, Branch: "main"}); err != nil {
			t.Fatal(err)
		}
		env.commits = append(env.commits, commit)
	}

	repos := &distribution.Fallbacks{Protocol: &distribution.Repositories{
		Storage: served, Refs: cache.NewRefs(store, cache.RefsConfig{LoadTimeout: timeout}), KeyStore: distribution.NewKeys(direct),
		Timeout: timeout,
	}, Clients: distribution.NewClientIndexes(distribution.ClientIndexConfig{})}
	h := distribution.New(distribution.Config{
		Protocol: distribution.NewAccess(cache.NewIndexes(repos, 64<<20, "", nil), nil, nil),
		Logger:   slog.New(slog.NewTextHandler(env.logs, nil)), Registerer: env.reg,
	})
	e := echo.New()
	e.Use(middleware.RequestID())
	e.Use(middleware.Recover())
	h.Register(e)
	h.RegisterKeys(e)
	env.srv = httptest.NewServer(e)
	t.Cleanup(env.srv.Close)
	return env
}

func (env *s3Env) url(commit, file string) string {
	return env.srv.URL + "/distribution/" + commit + "/acme/hello/x86_64/" + file
}

// get fetches url with the headers given as name, value pairs; the body
// is read whole, err is the body's read error.
func get(t *testing.T, url string, hdr ...string) (resp *http.Response, body []byte, err error) {
	t.Helper()
	resp, body, err, rerr := fetchURL(url, hdr...)
	if rerr != nil {
		t.Fatalf("GET %s: %v", url, rerr)
	}
	return resp, body, err
}

// fetchURL is get for other goroutines than the test's: rerr is the
// request's error, err the body's.
func fetchURL(url string, hdr ...string) (resp *http.Response, body []byte, err, rerr error) {
	req, rerr := http.NewRequest(http.MethodGet, url, nil)
	if rerr != nil {
		return nil, nil, nil, rerr
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	// A fresh connection per request: a cut one is never reused. The
	// timeout is far past every bound checked: a hang fails, late.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	resp, rerr = c.Do(req)
	if rerr != nil {
		return nil, nil, nil, rerr
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp, body, err, nil
}

// s3Reads is the S3 requests the handler sent while f ran.
func (env *s3Env) s3Reads(f func()) (gets, heads int) {
	g, h := env.proxy.Requests("GET"), env.proxy.Requests("HEAD")
	f()
	return env.proxy.Requests("GET") - g, env.proxy.Requests("HEAD") - h
}

// TestRangesReadStorageAFewTimes: however many ranges a request names,
// the S3 object is read a handful of times (it was once per range: 5,000
// ranges made 5,003 GETs), and the client gets the right bytes:
// overlapping and adjacent ranges are merged, in the order asked, and
// beyond --max-ranges merged ranges the whole file comes back.
func TestRangesReadStorageAFewTimes(t *testing.T) {
	env := newS3Env(t, 5*time.Second, 1<<20)
	url, pkg := env.url(env.commits[0], pkgFile), env.pkg
	size := len(pkg)
	spec := func(n int, f func(i int) (int, int)) string {
		parts := make([]string, n)
		for i := range parts {
			a, b := f(i)
			parts[i] = fmt.Sprintf("%d-%d", a, b)
		}
		return "bytes=" + strings.Join(parts, ",")
	}
	type part struct{ start, end int }
	cases := []struct {
		name   string
		rng    string
		status int
		parts  []part // for a 206
	}{
		{"5000 disjoint ranges: the whole file", spec(5000, func(i int) (int, int) { return 2 * i, 2 * i }), http.StatusOK, nil},
		{"5000 overlapping ranges: one", spec(5000, func(i int) (int, int) { return 100 * i, 100*i + 199 }), http.StatusPartialContent,
			[]part{{0, 100*4999 + 199}}},
		{"5000 adjacent ranges, backwards: one", spec(5000, func(i int) (int, int) { return 10 * (4999 - i), 10*(4999-i) + 9 }), http.StatusPartialContent,
			[]part{{0, 49999}}},
		{"overlaps merged, in the order asked", "bytes=5000-5999, 0-99,50-149,-100", http.StatusPartialContent,
			[]part{{5000, 5999}, {0, 149}, {size - 100, size - 1}}},
		{"16 ranges: served", spec(16, func(i int) (int, int) { return 1000 * i, 1000*i + 9 }), http.StatusPartialContent, func() []part {
			var ps []part
			for i := range 16 {
				ps = append(ps, part{1000 * i, 1000*i + 9})
			}
			return ps
		}()},
		{"17 ranges: the whole file", spec(17, func(i int) (int, int) { return 1000 * i, 1000*i + 9 }), http.StatusOK, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var resp *http.Response
			var body []byte
			var err error
			start := time.Now()
			gets, heads := env.s3Reads(func() { resp, body, err = get(t, url, "Range", c.rng) })
			took := time.Since(start)
			if err != nil || resp.StatusCode != c.status {
				t.Fatalf("status %d, read error %v; want %d", resp.StatusCode, err, c.status)
			}
			// One HEAD (Open), one GET per merged range at most.
			if heads > 1 || gets > max(1, len(c.parts)) {
				t.Errorf("%d S3 GETs and %d HEADs for one request (took %v)", gets, heads, took)
			}
			switch {
			case c.status == http.StatusOK:
				if !bytes.Equal(body, pkg) {
					t.Fatalf("200 body of %d bytes is not the file (%d bytes)", len(body), size)
				}
			case len(c.parts) == 1:
				p := c.parts[0]
				if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", p.start, p.end, size) {
					t.Errorf("Content-Range %q, want %d-%d", cr, p.start, p.end)
				}
				if !bytes.Equal(body, pkg[p.start:p.end+1]) {
					t.Errorf("206 body of %d bytes is not bytes %d-%d", len(body), p.start, p.end)
				}
			default:
				_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
				if err != nil {
					t.Fatal(err)
				}
				mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
				for i := 0; ; i++ {
					mp, err := mr.NextPart()
					if err == io.EOF {
						if i != len(c.parts) {
							t.Errorf("%d parts, want %d", i, len(c.parts))
						}
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					if i >= len(c.parts) {
						t.Fatalf("more than %d parts", len(c.parts))
					}
					p := c.parts[i]
					if cr := mp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", p.start, p.end, size) {
						t.Errorf("part %d: Content-Range %q, want bytes %d-%d", i, cr, p.start, p.end)
					}
					data, _ := io.ReadAll(mp)
					if !bytes.Equal(data, pkg[p.start:p.end+1]) {
						t.Errorf("part %d: %d bytes, not bytes %d-%d", i, len(data), p.start, p.end)
					}
				}
			}
		})
	}
}

// TestStorageFrozen: with S3 stopped (SIGSTOP: it accepts connections and
// answers nothing), a request that needs it (a package, an index not in
// memory, /keys/) gets 503 with Retry-After once the storage timeout
// passes, never later; an index already in memory is still served;
// everything works again as soon as S3 is back.
func TestStorageFrozen(t *testing.T) {
	const timeout = time.Second
	env := newS3Env(t, timeout, 64<<10)
	one, two := env.commits[0], env.commits[1]
	// Before the freeze: one's index in memory; both refs resolved (a
	// commit's resolution never expires), so what follows waits on S3
	// objects only.
	if resp, body, err := get(t, env.url(one, artifact.IndexFile)); err != nil || resp.StatusCode != 200 || !bytes.Equal(body, env.index) {
		t.Fatalf("index before the freeze: %d, %v", resp.StatusCode, err)
	}
	if resp, _, _ := get(t, env.url(two, "missing-1.0-r0.apk")); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a missing package before the freeze: %d", resp.StatusCode)
	}

	env.gw.Freeze()
	t.Cleanup(env.gw.Thaw)
	// Bounds: the deadline itself (a 503 sooner would be some other
	// failure) and a generous margin for a loaded machine.
	const margin = 3 * time.Second
	urls := []string{env.url(one, pkgFile), env.url(two, pkgFile), env.url(two, artifact.IndexFile)}
	keys := env.srv.URL + distribution.KeysPrefix + "acme/hello/"
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			u := append(urls, keys)[i%(len(urls)+1)]
			start := time.Now()
			resp, _, _, err := fetchURL(u)
			took := time.Since(start)
			if err != nil {
				t.Errorf("%s with S3 frozen: %v after %v", u, err, took)
				return
			}
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Errorf("%s with S3 frozen: %d, Retry-After %q; want 503 with Retry-After", u, resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			if took < timeout-50*time.Millisecond || took > timeout+margin {
				t.Errorf("%s answered after %v: want the storage timeout %v (+%v)", u, took, timeout, margin)
			}
		})
	}
	// The index in memory needs no storage.
	start := time.Now()
	resp, body, err := get(t, env.url(one, artifact.IndexFile))
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, env.index) {
		t.Errorf("cached index with S3 frozen: %d, %v", resp.StatusCode, err)
	}
	if took := time.Since(start); took > timeout {
		t.Errorf("cached index with S3 frozen took %v", took)
	}
	wg.Wait()
	if !strings.Contains(env.logs.String(), "timeout=true") {
		t.Errorf("no log line says storage timed out:\n%s", env.logs)
	}

	env.gw.Thaw()
	deadline := time.Now().Add(10 * time.Second)
	for _, u := range urls {
		for {
			resp, body, err := get(t, u)
			if err == nil && resp.StatusCode == 200 && (bytes.Equal(body, env.pkg) || bytes.Equal(body, env.index)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s after the thaw: %d, %v", u, resp.StatusCode, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestStorageStallMidBody: S3 freezing in the middle of a package's body
// cuts the response within the storage timeout (per read) rather than
// holding the client; the client sees a failed download.
func TestStorageStallMidBody(t *testing.T) {
	const timeout = time.Second
	// Larger than every socket buffer between S3 and the client, so the
	// freeze leaves most of it unsent.
	env := newS3Env(t, timeout, 32<<20)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, env.url(env.commits[0], pkgFile), nil)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	env.gw.Freeze()
	t.Cleanup(env.gw.Thaw)
	start := time.Now()
	n, err := io.Copy(io.Discard, resp.Body)
	took := time.Since(start)
	t.Logf("cut %v after the freeze, %d bytes later", took, n)
	if err == nil || 1<<20+n >= int64(len(env.pkg)) {
		t.Fatalf("with S3 frozen mid-body the client read %d more bytes and %v: want a failed download", n, err)
	}
	if took > timeout+5*time.Second {
		t.Errorf("the stalled body was cut after %v: want the storage timeout %v (+ draining buffers)", took, timeout)
	}
	waitFor(t, func() bool {
		return counter(t, env.reg, "uplink_distribution_aborted_total", "package", "timeout") == 1
	},
		"aborted_total{package,timeout} == 1")
}

// TestStorageResetMidBody: S3 resetting the connection after the headers
// went out aborts the response, so the client sees a failed download, not
// a short 200; a log line names the request id the client got, and the
// abort is counted on its own, not as a 200.
func TestStorageResetMidBody(t *testing.T) {
	env := newS3Env(t, 5*time.Second, 2<<20)
	url := env.url(env.commits[0], pkgFile)
	env.proxy.CutResponsesAfter(256 << 10)

	for i, rng := range []string{"", "bytes=0-"} { // plain, and through http.ServeContent
		var hdr []string
		if rng != "" {
			hdr = []string{"Range", rng}
		}
		resp, body, err := get(t, url, hdr...)
		if resp.StatusCode != 200 && resp.StatusCode != 206 {
			t.Fatalf("Range %q: status %d: want the headers sent before the cut", rng, resp.StatusCode)
		}
		if err == nil || len(body) >= len(env.pkg) {
			t.Fatalf("Range %q: the client read %d of %d bytes and %v: want a failed download", rng, len(body), len(env.pkg), err)
		}
		if resp.ContentLength != int64(len(env.pkg)) {
			t.Errorf("Range %q: Content-Length %d", rng, resp.ContentLength)
		}
		id := resp.Header.Get(echo.HeaderXRequestID)
		if id == "" {
			t.Fatal("no X-Request-Id")
		}
		waitFor(t, func() bool {
			return logLine(env.logs.String(), "response aborted", "id="+id) &&
				counter(t, env.reg, "uplink_distribution_aborted_total", "package", "error") == float64(i+1)
		}, "a log line with id "+id+" and the abort counted")
	}
	if env.proxy.Cuts() < 2 {
		t.Errorf("the proxy cut %d responses", env.proxy.Cuts())
	}
	if n := counter(t, env.reg, "uplink_distribution_requests_total", "aborted", "package", "commit"); n != 2 {
		t.Errorf("requests_total{code=aborted} = %v, want 2", n)
	}
	for _, code := range []string{"200", "206"} {
		if n := counter(t, env.reg, "uplink_distribution_requests_total", code, "package", "commit"); n != 0 {
			t.Errorf("requests_total{code=%s} = %v: an aborted response counted as complete", code, n)
		}
	}

	env.proxy.CutResponsesAfter(0)
	if resp, body, err := get(t, url); err != nil || resp.StatusCode != 200 || !bytes.Equal(body, env.pkg) {
		t.Fatalf("once S3 stops failing: %d, %d bytes, %v", resp.StatusCode, len(body), err)
	}
	if n := counter(t, env.reg, "uplink_distribution_requests_total", "200", "package", "commit"); n != 1 {
		t.Errorf("requests_total{code=200} = %v after one complete download", n)
	}
}

// counter is the value of the series of name whose label values are
// values, given in the order of the label names sorted (as Prometheus
// keeps them: code, file, ref_kind).
func counter(t *testing.T, reg *prometheus.Registry, name string, values ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(values) {
				continue
			}
			for i, l := range m.GetLabel() {
				if l.GetValue() != values[i] {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// logLine reports a log line holding every one of words.
func logLine(logs string, words ...string) bool {
lines:
	for line := range strings.Lines(logs) {
		for _, w := range words {
			if !strings.Contains(line, w) {
				continue lines
			}
		}
		return true
	}
	return false
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within 10s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
