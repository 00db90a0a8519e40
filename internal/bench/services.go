package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/uplinkhq/uplink/internal/testenv"
	"github.com/uplinkhq/uplink/storage/s3"
)

const (
	s3Access = "uplinkbench"
	s3Secret = "uplinkbench-secret-key"
	s3Region = "us-east-1"
	s3Bucket = "bench"       // the one-app data set, readable anonymously
	s3Large  = "bench-large" // the scale data set
)

func (b *bench) startRedis(ctx context.Context) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(addr)
	dir := b.mkdir("redis")
	args := []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}
	if _, err := b.procs.start(ctx, "redis", b.tmp, b.tools.redis, args, func() error { return testenv.PingRedis(addr) }); err != nil {
		return err
	}
	b.redisURL = "redis://" + addr + "/0"
	return nil
}

// startS3 starts versitygw (the command line of internal/testenv) and
// creates the bucket, readable anonymously so that wrk can GET objects
// straight from it.
func (b *bench) startS3(ctx context.Context) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	args := []string{
		"--access", s3Access, "--secret", s3Secret, "--region", s3Region,
		"--port", addr, "--keep-alive", "--quiet", "posix", b.mkdir("s3"),
	}
	ready := httpReady("http://"+addr+"/", func(resp *http.Response) error {
		if resp.Header.Get("X-Amz-Request-Id") == "" {
			return fmt.Errorf("not an S3 answer: %s", resp.Status)
		}
		return nil
	})
	if b.s3, err = b.procs.start(ctx, "versitygw", b.tmp, b.tools.versitygw, args, ready); err != nil {
		return err
	}
	b.s3Endpoint = addr
	return makeBuckets(ctx, addr)
}

func makeBuckets(ctx context.Context, endpoint string) error {
	c, err := minio.New(endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(s3Access, s3Secret, ""),
		Region:       s3Region,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return err
	}
	for _, bucket := range []string{s3Bucket, s3Large} {
		if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: s3Region}); err != nil {
			return fmt.Errorf("create bucket %s: %w", bucket, err)
		}
	}
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*",` +
		`"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::` + s3Bucket + `/*"]}]}`
	if err := c.SetBucketPolicy(ctx, s3Bucket, policy); err != nil {
		return fmt.Errorf("public-read bucket policy: %w", err)
	}
	return nil
}

func (b *bench) s3Config(bucket string) s3.Config {
	return s3.Config{
		Endpoint: b.s3Endpoint, Bucket: bucket, Region: s3Region,
		AccessKey: s3Access, SecretKey: s3Secret, PathStyle: true,
	}
}

// nginxConf is every nginx of the bench: %[1]s is its directory, %[2]s
// its server block.
const nginxConf = `worker_processes auto;
worker_rlimit_nofile 65536;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events {
	worker_connections 8192;
	multi_accept on;
}
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	tcp_nodelay on;
	keepalive_timeout 65s;
	keepalive_requests 1000000;
	default_type application/octet-stream;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
%[2]s
}
`

// nginxStaticServer serves %[2]s at %[1]s the way an operator would serve static
// files.
const nginxStaticServer = `	open_file_cache max=10000 inactive=60s;
	open_file_cache_valid 60s;
	open_file_cache_errors on;
	server {
		listen %[1]s;
		root %[2]s;
	}`

// nginxCacheServer is nginx as a caching proxy at %[1]s in front of versitygw at
// %[3]s, caching in %[2]s: what an operator would put before S3 instead of
// uplink, for the cold rows.
const nginxCacheServer = `	proxy_cache_path %[2]s/cache levels=1:2 keys_zone=packages:10m max_size=10g inactive=1h use_temp_path=off;
	upstream s3 {
		server %[3]s;
		keepalive 64;
	}
	server {
		listen %[1]s;
		location / {
			proxy_pass http://s3;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_cache packages;
			proxy_cache_valid 200 1h;
			proxy_cache_lock on;
			proxy_buffers 16 256k;
			proxy_busy_buffers_size 512k;
		}
	}`

// runNginx starts nginx in dir with the server block server makes for the
// address it listens on, and returns it with its URL.
func (b *bench) runNginx(ctx context.Context, name, dir string, server func(addr string) string) (*proc, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, server(addr)), 0o644); err != nil {
		return nil, "", err
	}
	args := []string{"-p", dir, "-c", conf, "-e", filepath.Join(dir, "nginx-error.log"), "-g", "daemon off;"}
	p, err := b.procs.start(ctx, name, dir, b.tools.nginx, args, httpReady("http://"+addr+"/", anyAnswer))
	return p, "http://" + addr, err
}

// startNginxCache starts an nginx caching proxy in front of versitygw,
// with an empty cache of its own in dir.
func (b *bench) startNginxCache(ctx context.Context, dir string) (*proc, string, error) {
	return b.runNginx(ctx, "nginx-cache", dir, func(addr string) string {
		return fmt.Sprintf(nginxCacheServer, addr, dir, b.s3Endpoint)
	})
}

// startNginx serves root (uplink's filesystem storage directory) the way
// an operator would serve static files.
func (b *bench) startNginx(ctx context.Context, root string) (err error) {
	b.nginx, b.nginxURL, err = b.runNginx(ctx, "nginx", b.mkdir("nginx"), func(addr string) string {
		return fmt.Sprintf(nginxStaticServer, addr, root)
	})
	return err
}

// uplink is one running uplink serve.
type uplink struct {
	*proc
	url   string // distribution listener
	admin string // admin listener
}

// store is where an uplink keeps artifacts and refs.
type store struct {
	dir    string // the data dir: the filesystem store under it, or only S3's upload spool
	bucket string // empty for the filesystem driver
}

// startUplink starts uplink on st; each start gets its own Redis prefix,
// so nothing is cached.
func (b *bench) startUplink(ctx context.Context, name string, st store, extra ...string) (*uplink, error) {
	dist, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adm, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{
		"serve", "--listen", dist, "--admin-listen", adm, "--admin-token", b.token,
		"--data-dir", st.dir, "--access-log=false", "--log-level", "warn",
	}
	if st.bucket != "" {
		args = append(args, b.s3Args(st.bucket)...)
	}
	if b.pprof {
		args = append(args, "--pprof")
	}
	args = append(args, extra...)
	u := &uplink{url: "http://" + dist, admin: "http://" + adm}
	u.proc, err = b.procs.start(ctx, name, b.tmp, b.tools.uplink, args, httpReady(u.admin+"/readyz", statusOK))
	return u, err
}

func (b *bench) s3Args(bucket string) []string {
	b.starts++
	return []string{
		"--storage", "s3", "--s3-endpoint", b.s3Endpoint, "--s3-bucket", bucket, "--s3-region", s3Region,
		"--s3-access-key", s3Access, "--s3-secret-key", s3Secret, "--s3-path-style", "--s3-tls=false",
		"--redis", b.redisURL, "--redis-prefix", fmt.Sprintf("bench%d:", b.starts),
	}
}

// get fetches url with the admin token.
func (b *bench) get(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return resp, nil
}

// storageReads sums uplink_storage_requests_total for the read ops.
func (b *bench) storageReads(ctx context.Context, u *uplink) (int, error) {
	m, err := b.scrape(ctx, u)
	if err != nil {
		return 0, err
	}
	if !m.has("uplink_storage_requests_total") {
		return 0, errors.New("no uplink_storage_requests_total in /metrics")
	}
	sum := 0.0
	for _, op := range []string{`op="open"`, `op="stat"`, `op="list"`} {
		sum += m.sum("uplink_storage_requests_total", op)
	}
	return int(sum), nil
}

// samples are the values of uplink's /metrics by series, the name and
// its labels as written (`name{a="x",b="y"}`).
type samples map[string]float64

// scrape reads u's /metrics.
func (b *bench) scrape(ctx context.Context, u *uplink) (samples, error) {
	resp, err := b.get(ctx, u.admin+"/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return parseSamples(resp.Body)
}

// parseSamples reads the Prometheus text format (without timestamps, as
// uplink writes it).
func parseSamples(r io.Reader) (samples, error) {
	m := samples{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if line == "" || line[0] == '#' || i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

func (m samples) has(name string) bool {
	for series := range m {
		if ofMetric(series, name) {
			return true
		}
	}
	return false
}

// sum adds the series of metric name that carry every one of labels
// (each written `key="value"`).
func (m samples) sum(name string, labels ...string) float64 {
	v := 0.0
	for series, x := range m {
		if ofMetric(series, name) && allIn(series, labels) {
			v += x
		}
	}
	return v
}

func ofMetric(series, name string) bool {
	rest, ok := strings.CutPrefix(series, name)
	return ok && (rest == "" || rest[0] == '{')
}

func allIn(series string, labels []string) bool {
	for _, l := range labels {
		if !strings.Contains(series, l) {
			return false
		}
	}
	return true
}

// peakRSS is the process's high-water resident set (VmHWM), in MiB.
func peakRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb float64
			if _, err := fmt.Sscan(rest, &kb); err != nil {
				return 0, err
			}
			return kb / 1024, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc/pid/status")
}
