package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/cache"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/distribution/retention"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/instance/rollout"
	"github.com/uplinkhq/uplink/internal/admin"
	"github.com/uplinkhq/uplink/internal/notify"
	"github.com/uplinkhq/uplink/internal/server"
)

func serveFlags(cfg *server.Config, logLevel, logFormat *string) *flag.FlagSet {
	fs := newFlagSet("serve", "serve [flags]")
	fs.StringVar(&cfg.Listen, "listen", ":4080", "distribution listener (plain HTTP, what apk fetches)")
	fs.StringVar(&cfg.AdminListen, "admin-listen", "127.0.0.1:4040", "admin listener: API, /metrics, /healthz, /readyz")
	fs.StringVar(&cfg.AdminTLSCert, "admin-tls-cert", "", "serve the admin listener over TLS with this certificate (PEM)")
	fs.StringVar(&cfg.AdminTLSKey, "admin-tls-key", "", "private key (PEM) for --admin-tls-cert")
	fs.StringVar(&cfg.DataDir, "data-dir", "./uplink-data", "local data: filesystem storage, the generated admin token, upload spooling")
	fs.StringVar(&cfg.Storage, "storage", "filesystem", "storage driver: filesystem (under --data-dir) or s3")
	fs.StringVar(&cfg.S3.Endpoint, "s3-endpoint", "", "S3 endpoint host[:port], e.g. s3.eu-west-1.amazonaws.com")
	fs.StringVar(&cfg.S3.Bucket, "s3-bucket", "", "S3 bucket holding deployments/ and meta/")
	fs.StringVar(&cfg.S3.Region, "s3-region", "", "S3 region")
	fs.StringVar(&cfg.S3.AccessKey, "s3-access-key", "", "S3 access key")
	fs.StringVar(&cfg.S3.SecretKey, "s3-secret-key", "", "S3 secret key")
	fs.BoolVar(&cfg.S3.UseTLS, "s3-tls", true, "use HTTPS to reach S3")
	fs.BoolVar(&cfg.S3.PathStyle, "s3-path-style", false, "path-style bucket addressing (minio, versitygw, most self-hosted S3)")
	fs.BoolVar(&cfg.S3CreateBucket, "s3-create-bucket", false, "create the bucket at start if it does not exist")
	fs.BoolVar(&cfg.S3Redirect, "s3-redirect", false, "answer package requests with a 302 to a presigned S3 URL (instances must reach --s3-endpoint); indexes are still served by uplink")
	fs.DurationVar(&cfg.S3RedirectExpiry, "s3-redirect-expiry", distribution.DefaultRedirectExpiry, "how long the presigned URL of an --s3-redirect stays valid (1m to 1h)")
	fs.StringVar(&cfg.Redis, "redis", "", "Redis URL (redis://host:6379/0) shared by replicas; empty: in-process cache only")
	fs.StringVar(&cfg.RedisPrefix, "redis-prefix", distribution.DefaultRedisPrefix, "prefix of every Redis key and channel")
	fs.DurationVar(&cfg.RedisTimeout, "redis-timeout", distribution.DefaultRedisTimeout, "bound on each Redis call; past it requests go to storage")
	fs.DurationVar(&cfg.RedisTTL, "redis-ttl", cache.DefaultRedisTTL, "how long a ref pointer lives in Redis, and how long a replica keeps announcing a publish that Redis missed")
	fs.DurationVar(&cfg.RefCacheTTL, "ref-cache-ttl", cache.DefaultRefTTL, "how long any replica trusts a ref pointer, in memory or from Redis, after it was read from storage: every replica sees a publish within it, whatever Redis does")
	fs.DurationVar(&cfg.ClientIndexTTL, "client-index-ttl", distribution.DefaultClientIndexTTL, "how long packages a client asks for through a branch come from the commit whose index it last got there (keep above apk's 4h index cache)")
	fs.Var(sizeFlag{&cfg.IndexCacheSize}, "index-cache-size", "memory for indexes of published commits, and as much disk in the data dir, which they are sent from (e.g. 256MiB)")
	fs.StringVar(&cfg.ArtifactCacheDir, "artifact-cache-dir", "", "local disk cache of the packages of published commits in front of --storage s3, served by sendfile (default <data-dir>/artifact-cache)")
	fs.Var(sizeFlag{&cfg.ArtifactCacheSize}, "artifact-cache-size", "bound of --artifact-cache-dir, least recently used files evicted (e.g. 4GiB); 0 turns the cache off")
	fs.IntVar(&cfg.Retention, "retention", ref.DefaultRetention, "commits of a branch that a package request through the branch may fall back to")
	fs.Var(cidrFlag{&cfg.AllowCIDR}, "allow-cidr", "comma-separated prefixes allowed to fetch from /distribution (default: everyone)")
	fs.Var(listFlag{&cfg.AdminTokens}, "admin-token", "comma-separated admin bearer tokens (default: generated into <data-dir>/"+server.TokenFile+")")
	fs.Var(sizeFlag{&cfg.MaxUpload}, "max-upload-size", "largest artifact file accepted by upload")
	fs.DurationVar(&cfg.PublishGrace, "publish-grace", admin.DefaultPublishGrace, "a publish interrupted between its writes (crash, storage failure) is completed by any replica once this old")
	fs.DurationVar(&cfg.SpoolMaxAge, "spool-max-age", admin.DefaultSpoolMaxAge, "upload spool files in --data-dir left by a crash are removed once untouched this long")
	fs.DurationVar(&cfg.MultipartMaxAge, "s3-multipart-max-age", admin.DefaultMultipartMaxAge, "S3 multipart uploads under deployments/ and meta/ never completed are aborted once this old")
	fs.DurationVar(&cfg.SweepInterval, "sweep-interval", admin.DefaultSweepInterval, "how often interrupted publishes, spool files and multipart uploads are looked for (and at start)")
	fs.IntVar(&cfg.KeepBuilds, "keep-builds", retention.DefaultKeepBuilds, "retention: the newest builds of each branch that a prune keeps (an app's PATCH retention overrides it)")
	fs.DurationVar(&cfg.KeepAge, "keep-age", retention.DefaultKeepAge, "retention: a prune keeps every build younger than this")
	fs.IntVar(&cfg.KeepOperations, "keep-operations", retention.DefaultKeepOperations, "retention: a prune keeps the commits of each installation's newest operations (targets and origins)")
	fs.IntVar(&cfg.KeepHistory, "keep-history", instance.DefaultKeepHistory, "each installation keeps its newest channel-history entries and archived operations, this many of each")
	fs.DurationVar(&cfg.PruneInterval, "prune-interval", retention.DefaultInterval, "how often every app is pruned by its retention policy, on one replica at a time; 0: only on request")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM, how long in-flight downloads may take to finish")
	fs.DurationVar(&cfg.DrainDelay, "drain-delay", server.DefaultDrainDelay, "on SIGTERM, how long to keep serving with /readyz answering 503 before the listeners close, for a load balancer to notice")
	fs.Var(sizeFlag{&cfg.MaxHeaderBytes}, "max-header-bytes", "largest request line and headers on both listeners; beyond it the answer is 431")
	fs.DurationVar(&cfg.ReadHeaderTimeout, "read-header-timeout", server.DefaultReadHeaderTimeout, "how long a client may take to send a request's headers")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", server.DefaultIdleTimeout, "how long an unused keep-alive connection stays open")
	fs.DurationVar(&cfg.StallTimeout, "stall-timeout", server.DefaultStallTimeout, "cut a client that takes no response bytes (each 128KiB must go within it) or sends no request-body bytes for this long")
	fs.IntVar(&cfg.MaxConnections, "max-connections", server.DefaultMaxConnections, "open connections on the distribution listener; beyond it the answer is 503 with Retry-After")
	fs.IntVar(&cfg.AdminMaxConnections, "admin-max-connections", server.DefaultAdminMaxConnections, "open connections on the admin listener; beyond it the answer is 503 with Retry-After")
	fs.DurationVar(&cfg.StorageTimeout, "storage-timeout", distribution.DefaultStorageTimeout, "how long a distribution read waits on storage for the first byte, then per read; beyond it 503 with Retry-After (or, mid-body, a cut connection)")
	fs.IntVar(&cfg.MaxRanges, "max-ranges", distribution.DefaultMaxRanges, "ranges one request may ask for once overlapping and adjacent ones are merged; beyond it the whole file is answered (200)")
	fs.BoolVar(&cfg.AccessLog, "access-log", true, "log every distribution request")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve Go's profiler at /debug/pprof/ on the admin listener")
	fs.StringVar(&cfg.DistributionURL, "distribution-url", "", "how instances reach the distribution listener, for their repository lines (default http://<hostname>:<listen port>)")
	fs.DurationVar(&cfg.OperationLease, "operation-lease", operation.DefaultLease, "how long a replica may go silent before another takes its operation over")
	fs.DurationVar(&cfg.OperationScan, "operation-scan", operation.DefaultScan, "how often replicas look for operations nobody runs")
	fs.DurationVar(&cfg.NoBackendDelay, "no-backend-step-delay", 0, "without an instance backend, make each recorded step take this long (rehearsals, tests)")
	fs.StringVar(&cfg.Incus, "incus", "", "instance backend: unix:///var/lib/incus/unix.socket or https://host:8443 (default: none, steps recorded as skipped)")
	fs.StringVar(&cfg.IncusCert, "incus-cert", "", "client certificate (PEM) for an https --incus")
	fs.StringVar(&cfg.IncusKey, "incus-key", "", "client key (PEM) for --incus-cert")
	fs.StringVar(&cfg.IncusServerCert, "incus-server-cert", "", "the server's certificate (PEM), pinned")
	fs.StringVar(&cfg.IncusProject, "incus-project", "default", "Incus project of installations that name none")
	fs.StringVar(&cfg.ImageServer, "image-server", "", "simplestreams server to pull images from (e.g. https://images.linuxcontainers.org); default: images local to the Incus server")
	fs.BoolVar(&cfg.IncusProxyDistribution, "incus-proxy-distribution", false, "give every instance a proxy device to this uplink's distribution listener (uplink on the instances' host, no network path)")
	fs.DurationVar(&cfg.ReconcileInterval, "reconcile-interval", rollout.DefaultReconcileInterval, "how often instances are compared with their installations' channels")
	fs.BoolVar(&cfg.AllowIncusLeases, "allow-incus-leases", false, "admit distribution clients only from addresses leased in the Incus project of an installation of the app")
	fs.Var(listFlag{&cfg.NotifyURLs}, "notify-url", "POST a JSON event on every publish and operation start and end to this URL (repeatable or comma-separated); queued in storage, delivered at least once")
	fs.StringVar(&cfg.NotifySecret, "notify-secret", "", "sign every --notify-url delivery: X-Uplink-Signature: sha256=<hex HMAC-SHA256 of the body with this key>")
	fs.DurationVar(&cfg.NotifyTimeout, "notify-timeout", 10*time.Second, "bound on each --notify-url delivery; a slower receiver is retried with backoff")
	fs.StringVar(logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(logFormat, "log-format", "text", "text or json")
	return fs
}

func defaultConfig() server.Config {
	return server.Config{IndexCacheSize: 256 << 20, ArtifactCacheSize: 4 << 30, MaxUpload: 2 << 30, MaxHeaderBytes: server.DefaultMaxHeaderBytes}
}

// validate reports every mistake at once, each with what to do.
func validate(cfg *server.Config, logLevel, logFormat string) error {
	var p problems
	p.listeners(cfg)
	p.storage(cfg)
	p.caches(cfg)
	p.distributionURL(cfg)
	p.instances(cfg)
	p.limits(cfg)
	p.publishing(cfg)
	if _, err := parseLevel(logLevel); err != nil {
		p = append(p, err)
	}
	if logFormat != "text" && logFormat != "json" {
		p.bad("--log-format %q: want text or json", logFormat)
	}
	return errors.Join(p...)
}

// problems collects what validate finds wrong.
type problems []error

func (p *problems) bad(format string, args ...any) { *p = append(*p, fmt.Errorf(format, args...)) }

func (p *problems) listeners(cfg *server.Config) {
	for _, l := range []struct{ flag, v string }{{"--listen", cfg.Listen}, {"--admin-listen", cfg.AdminListen}} {
		_, port, err := net.SplitHostPort(l.v)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
			p.bad("%s %q: want host:port, e.g. :4080 or 127.0.0.1:4040", l.flag, l.v)
		}
	}
	if (cfg.AdminTLSCert == "") != (cfg.AdminTLSKey == "") {
		p.bad("--admin-tls-cert and --admin-tls-key go together")
	}
	for _, f := range []string{cfg.AdminTLSCert, cfg.AdminTLSKey} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				p.bad("--admin-tls-cert/--admin-tls-key: %v", err)
			}
		}
	}
	for _, t := range cfg.AdminTokens {
		if len(t) < 16 {
			p.bad("--admin-token: every token needs at least 16 characters")
			break
		}
	}
}

func (p *problems) storage(cfg *server.Config) {
	if cfg.DataDir == "" {
		p.bad("--data-dir must not be empty")
	}
	switch cfg.Storage {
	case "filesystem":
	case "s3":
		if cfg.S3.Endpoint == "" || strings.Contains(cfg.S3.Endpoint, "/") {
			p.bad("--s3-endpoint %q: want host[:port] without a scheme (use --s3-tls=false for plain HTTP)", cfg.S3.Endpoint)
		}
		if cfg.S3.Bucket == "" {
			p.bad("--s3-bucket is required with --storage s3")
		}
		if (cfg.S3.AccessKey == "") != (cfg.S3.SecretKey == "") {
			p.bad("--s3-access-key and --s3-secret-key go together")
		}
	default:
		p.bad("--storage %q: want filesystem or s3", cfg.Storage)
	}
	if cfg.S3Redirect && cfg.Storage != "s3" {
		p.bad("--s3-redirect needs --storage s3")
	}
	if cfg.S3RedirectExpiry < time.Minute || cfg.S3RedirectExpiry > time.Hour {
		p.bad("--s3-redirect-expiry must be from 1m to 1h")
	}
	if cfg.StorageTimeout < 100*time.Millisecond || cfg.StorageTimeout > 10*time.Minute {
		p.bad("--storage-timeout must be from 100ms to 10m")
	}
}

func (p *problems) caches(cfg *server.Config) {
	if cfg.Redis != "" {
		if u, err := url.Parse(cfg.Redis); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
			p.bad("--redis %q: want redis://host:port/db, rediss://... or unix:///path", cfg.Redis)
		}
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--redis-timeout", cfg.RedisTimeout}, {"--redis-ttl", cfg.RedisTTL}, {"--ref-cache-ttl", cfg.RefCacheTTL},
		{"--client-index-ttl", cfg.ClientIndexTTL}, {"--shutdown-timeout", cfg.ShutdownTimeout}} {
		if d.v <= 0 {
			p.bad("%s must be positive", d.flag)
		}
	}
	if cfg.IndexCacheSize < 1<<20 {
		p.bad("--index-cache-size must be at least 1MiB")
	}
	if cfg.ArtifactCacheSize != 0 && cfg.ArtifactCacheSize < 1<<20 {
		p.bad("--artifact-cache-size must be 0 (off) or at least 1MiB")
	}
}

// distributionURL defaults --distribution-url to this host and the
// --listen port, then checks it.
func (p *problems) distributionURL(cfg *server.Config) {
	if cfg.DistributionURL == "" {
		host, _ := os.Hostname()
		_, port, _ := net.SplitHostPort(cfg.Listen)
		cfg.DistributionURL = "http://" + net.JoinHostPort(host, port)
	}
	if u, err := url.Parse(cfg.DistributionURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		p.bad("--distribution-url %q: want http://host[:port] (instances fetch from it)", cfg.DistributionURL)
	}
}

func (p *problems) instances(cfg *server.Config) {
	if cfg.OperationLease < time.Second || cfg.OperationScan <= 0 || cfg.NoBackendDelay < 0 {
		p.bad("--operation-lease must be at least 1s, --operation-scan positive, --no-backend-step-delay not negative")
	}
	switch {
	case cfg.Incus == "":
		if cfg.AllowIncusLeases || cfg.IncusProxyDistribution {
			p.bad("--allow-incus-leases and --incus-proxy-distribution need --incus")
		}
	case strings.HasPrefix(cfg.Incus, "unix://"):
		if strings.TrimPrefix(cfg.Incus, "unix://") == "" {
			p.bad("--incus %q: want unix:///path/to/unix.socket", cfg.Incus)
		}
	case strings.HasPrefix(cfg.Incus, "https://"):
		if cfg.IncusCert == "" || cfg.IncusKey == "" {
			p.bad("--incus %s: HTTPS needs --incus-cert and --incus-key (a client certificate the server trusts)", cfg.Incus)
		}
	default:
		p.bad("--incus %q: want unix:///path/to/unix.socket or https://host:8443", cfg.Incus)
	}
	if cfg.IncusProxyDistribution {
		if _, port, _ := net.SplitHostPort(cfg.Listen); port == "0" {
			p.bad("--incus-proxy-distribution needs a fixed --listen port")
		}
	}
	if cfg.ReconcileInterval < time.Second {
		p.bad("--reconcile-interval must be at least 1s")
	}
}

// limits checks the connection and request limits.
func (p *problems) limits(cfg *server.Config) {
	if cfg.MaxHeaderBytes < 4<<10 || cfg.MaxHeaderBytes > 1<<20 {
		p.bad("--max-header-bytes must be from 4KiB to 1MiB")
	}
	if cfg.ReadHeaderTimeout <= 0 || cfg.IdleTimeout <= 0 || cfg.DrainDelay < 0 {
		p.bad("--read-header-timeout and --idle-timeout must be positive, --drain-delay not negative")
	}
	if cfg.StallTimeout < time.Second {
		p.bad("--stall-timeout must be at least 1s")
	}
	if cfg.MaxConnections < 1 || cfg.AdminMaxConnections < 1 {
		p.bad("--max-connections and --admin-max-connections must be at least 1")
	}
	if cfg.MaxRanges < 1 || cfg.MaxRanges > 1000 {
		p.bad("--max-ranges must be from 1 to 1000")
	}
}

func (p *problems) publishing(cfg *server.Config) {
	if cfg.PublishGrace < time.Second || cfg.SweepInterval < 100*time.Millisecond || cfg.SpoolMaxAge <= 0 || cfg.MultipartMaxAge <= 0 {
		p.bad("--publish-grace must be at least 1s, --sweep-interval at least 100ms, --spool-max-age and --s3-multipart-max-age positive")
	}
	if cfg.MaxUpload < 1<<10 {
		p.bad("--max-upload-size must be at least 1KiB")
	}
	if cfg.Retention < 1 || cfg.Retention > 1000 {
		p.bad("--retention must be from 1 to 1000")
	}
	if cfg.KeepBuilds < 0 || cfg.KeepAge < 0 || cfg.KeepOperations < 0 || cfg.PruneInterval < 0 || cfg.PruneInterval > 0 && cfg.PruneInterval < time.Minute {
		p.bad("--keep-builds, --keep-age and --keep-operations must not be negative, --prune-interval 0 or at least 1m")
	}
	if cfg.KeepHistory < instance.MinKeepHistory {
		p.bad("--keep-history must be at least %d", instance.MinKeepHistory)
	}
	for _, u := range cfg.NotifyURLs {
		if err := notify.CheckURL(u); err != nil {
			*p = append(*p, err)
		}
	}
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func newLogger(level, format string) *slog.Logger {
	l, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
