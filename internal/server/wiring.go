package server

// New and the steps it wires, in the order they depend on each other:
// storage, Redis, the ref caches, the instance domain (with its backend),
// the distribution handler, the admin API. Each step builds only from
// what the earlier ones returned, so nothing is wired after the fact.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/cache"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/distribution/retention"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/incus"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/instance/rollout"
	"github.com/uplinkhq/uplink/internal/admin"
	"github.com/uplinkhq/uplink/internal/console"
	"github.com/uplinkhq/uplink/internal/notify"
	"github.com/uplinkhq/uplink/internal/version"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/filesystem"
	"github.com/uplinkhq/uplink/storage/s3"
)

// New builds a Server; it opens storage and Redis but listens on nothing.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(buildInfo())

	drv, multipart, err := openStorage(ctx, cfg)
	if err != nil {
		return nil, err
	}
	presigner, _ := drv.(storage.Presigner) // before wrapping: the wrappers have no PresignGet
	drv = chaosStorage(storage.Instrument(drv, reg))
	s := &Server{cfg: cfg, log: log, store: drv, httpm: newHTTPMetrics(reg)}
	if cfg.S3Redirect && cfg.Storage == "s3" {
		s.presigner = presigner
	}
	s.refs = ref.NewStore(drv)
	s.refs.Retention = cfg.Retention
	if s.rdb, err = redisClient(cfg); err != nil {
		return nil, err
	}
	var rc redis.UniversalClient
	if s.rdb != nil {
		rc = s.rdb
	}
	s.cache = cache.NewRefs(s.refs, cache.RefsConfig{
		Redis: rc, Prefix: cfg.RedisPrefix, TTL: cfg.RefCacheTTL, RedisTTL: cfg.RedisTTL,
		RedisTimeout: cfg.RedisTimeout, Logger: log, Registerer: reg, Identity: cache.StorageIdentity(drv),
		LoadTimeout: cfg.StorageTimeout,
	})
	keys := distribution.NewKeys(drv)
	if s.notifier, err = notify.New(notify.Config{
		URLs: cfg.NotifyURLs, Secret: cfg.NotifySecret, Timeout: cfg.NotifyTimeout, Grace: cfg.NotifyGrace, Retry: cfg.NotifyRetry,
		UserAgent: version.UserAgent(), Storage: drv, Logger: log, Registerer: reg,
	}); err != nil {
		return nil, err
	}

	inst, err := s.instances(ctx, keys, reg)
	if err != nil {
		return nil, err
	}
	if s.dist, err = s.distribution(rc, keys, inst.authorizer, reg); err != nil {
		return nil, err
	}
	if s.admin, err = s.adminAPI(keys, inst.installations, multipart, reg); err != nil {
		return nil, err
	}
	return s, nil
}

// openStorage opens the configured driver; multipart is the driver's
// abort of stale multipart uploads, nil where it has none.
func openStorage(ctx context.Context, cfg Config) (drv storage.Driver, multipart admin.MultipartAborter, err error) {
	switch cfg.Storage {
	case "", "filesystem":
		d, err := filesystem.New(filepath.Join(cfg.DataDir, "storage"))
		if err != nil {
			return nil, nil, fmt.Errorf("filesystem storage: %w", err)
		}
		return d, nil, nil
	case "s3":
		d, err := s3.New(ctx, cfg.S3)
		if err != nil {
			return nil, nil, fmt.Errorf("s3 storage: %w", err)
		}
		if cfg.S3CreateBucket {
			if err := d.EnsureBucket(ctx); err != nil {
				return nil, nil, fmt.Errorf("s3 storage: creating bucket %q: %w", cfg.S3.Bucket, err)
			}
		}
		return d, d, nil
	}
	return nil, nil, fmt.Errorf("unknown storage driver %q (filesystem or s3)", cfg.Storage)
}

// redisClient is nil without --redis.
func redisClient(cfg Config) (*redis.Client, error) {
	if cfg.Redis == "" {
		return nil, nil
	}
	opts, err := redis.ParseURL(cfg.Redis)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	// Redis is a cache: fail fast and fall through to storage.
	timeout := cfg.RedisTimeout
	if timeout <= 0 {
		timeout = distribution.DefaultRedisTimeout
	}
	opts.DialTimeout = 4 * timeout
	opts.ReadTimeout = timeout
	opts.WriteTimeout = timeout
	opts.MaxRetries = -1
	opts.ContextTimeoutEnabled = true
	return redis.NewClient(opts), nil
}

// instanceDomain is what the instance step hands the later ones.
type instanceDomain struct {
	installations *instance.Service
	// authorizer admits distribution clients by Incus lease; nil admits all.
	authorizer distribution.Authorizer
}

// instances builds the installation service, the operation engine and,
// with --incus, the Incus backend, its reconciler and lease checks.
func (s *Server) instances(ctx context.Context, keys *distribution.Keys, reg prometheus.Registerer) (instanceDomain, error) {
	cfg, log := s.cfg, s.log
	var out instanceDomain
	var observer instance.Observer
	var obs *rollout.Observer
	var backend operation.Backend = operation.NoBackend{Delay: cfg.NoBackendDelay}
	var c *incus.ProtocolIncus
	if cfg.Incus != "" {
		var err error
		if c, err = connectIncus(ctx, cfg); err != nil {
			return out, err
		}
		obs = &rollout.Observer{Incus: rollout.InProjects(c), Logger: log}
		observer = obs
		backend = rollout.NewBackend(s.backendConfig(obs.Incus))
	}
	// The service signals wake when it queues an operation; the engine
	// listens on it.
	wake := operation.NewWakeup()
	out.installations = instance.New(instance.Config{
		Storage: s.store, Refs: s.refs, Resolver: s.cache, DistributionURL: cfg.DistributionURL, DefaultProject: cfg.IncusProject,
		Wakeup: wake, Observer: observer, Keys: keys, Events: s.notifier, KeepHistory: cfg.KeepHistory, Logger: log,
	})
	if c != nil {
		s.reconciler = &rollout.Reconciler{Observer: obs, Installations: out.installations, Interval: cfg.ReconcileInterval, Logger: log}
		if cfg.AllowIncusLeases {
			out.authorizer = &rollout.Leases{Incus: obs.Incus, Projects: out.installations.Projects}
		}
		log.Info("instance backend: incus", "server", cfg.Incus, "dialect", c.Dialect())
	}
	backend = instance.Verifying{Backend: backend, Storage: s.store}
	s.engine = operation.NewEngine(out.installations, backend, operation.EngineConfig{
		Lease: cfg.OperationLease, Scan: cfg.OperationScan, Wakeup: wake, Logger: log, Registerer: reg,
	})
	return out, nil
}

func (s *Server) backendConfig(c rollout.Projects) rollout.BackendConfig {
	bcfg := rollout.BackendConfig{Incus: c, ImageServer: s.cfg.ImageServer}
	if s.cfg.IncusProxyDistribution {
		host, port, _ := net.SplitHostPort(s.cfg.Listen)
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		bcfg.ProxyConnect = "tcp:" + net.JoinHostPort(host, port)
	}
	return bcfg
}

// distribution builds the listener apk talks to: the storage-backed
// repositories, decorated by the artifact cache (packages on local disk),
// the branch fallbacks, the index cache and the access checks.
func (s *Server) distribution(rc redis.UniversalClient, keys *distribution.Keys, authorizer distribution.Authorizer, reg prometheus.Registerer) (*echo.Echo, error) {
	cfg := s.cfg
	e := newEcho(s.log, cfg.AccessLog)
	clients := distribution.NewClientIndexes(distribution.ClientIndexConfig{
		Redis: rc, Prefix: cfg.RedisPrefix, Namespace: s.cache.Namespace, TTL: cfg.ClientIndexTTL, RedisTimeout: cfg.RedisTimeout,
		RefStaleness: cfg.RefCacheTTL, Logger: s.log, Registerer: reg,
	})
	storageRepos := &distribution.Repositories{Storage: s.store, Refs: s.cache, KeyStore: keys, Timeout: cfg.StorageTimeout}
	var repos distribution.Protocol = storageRepos
	// Only in front of remote storage: the filesystem's files are already
	// sent by sendfile.
	if cfg.ArtifactCacheSize > 0 && cfg.Storage != "filesystem" {
		var err error
		dir := cfg.ArtifactCacheDir
		if dir == "" {
			dir = filepath.Join(cfg.DataDir, "artifact-cache")
		}
		if repos, err = cache.NewArtifacts(repos, dir, cfg.ArtifactCacheSize, reg); err != nil {
			return nil, fmt.Errorf("artifact cache: %w", err)
		}
	}
	// The fallbacks outside the artifact cache: it sees one commit per
	// request, and answers a hit without asking storage which has it.
	repos = &distribution.Fallbacks{Protocol: repos, Clients: clients}
	repos = distribution.NewAccess(cache.NewIndexes(repos, cfg.IndexCacheSize, cfg.DataDir, reg), cfg.AllowCIDR, authorizer)
	var redirect *distribution.Redirect
	if s.presigner != nil {
		// Finds the commit the same way, through the storage repositories:
		// a redirected request never reads through (or fills) a cache.
		redirect = &distribution.Redirect{Packages: &distribution.Fallbacks{Protocol: storageRepos, Clients: clients},
			Presigner: s.presigner, Expiry: cfg.S3RedirectExpiry, Timeout: cfg.StorageTimeout}
	}
	dh := distribution.New(distribution.Config{Protocol: repos, MaxRanges: cfg.MaxRanges, Redirect: redirect, Logger: s.log, Registerer: reg})
	dh.Register(e)
	dh.RegisterKeys(e)
	e.RouteNotFound("/*", func(c echo.Context) error {
		return c.String(http.StatusNotFound, "not found: repositories are under /distribution/\n")
	})
	return e, nil
}

// adminAPI builds the admin listener: /api/v1, the console under /ui/,
// metrics, health, pprof.
func (s *Server) adminAPI(keys *distribution.Keys, installations *instance.Service, multipart admin.MultipartAborter, reg *prometheus.Registry) (*echo.Echo, error) {
	cfg := s.cfg
	tokens, err := s.adminTokens()
	if err != nil {
		return nil, err
	}
	e := newEcho(s.log, true)
	s.pruner = &retention.Pruner{Refs: s.refs, Keys: keys, Cache: s.cache, Storage: s.store, Interval: cfg.PruneInterval,
		Default: retention.Policy{KeepBuilds: cfg.KeepBuilds, KeepAge: cfg.KeepAge, KeepOperations: cfg.KeepOperations},
		Holder:  s.engine.Holder(), Logger: s.log}
	s.pruner.Register(reg)
	api := admin.New(admin.Config{
		Storage: s.store, Refs: s.refs, Cache: s.cache, Installations: installations, Tokens: tokens, MaxUpload: cfg.MaxUpload,
		TempDir: cfg.DataDir, Logger: s.log, Keys: keys, Validator: &distribution.Validator{Storage: s.store, Keys: keys},
		Events: s.notifier, Retention: s.pruner,
	})
	e.HTTPErrorHandler = api.ErrorHandler
	s.pruner.Installations = admin.Usage(installations)
	s.sweeper = &admin.Sweeper{Refs: s.refs, PublishGrace: cfg.PublishGrace, SpoolDir: cfg.DataDir, SpoolMaxAge: cfg.SpoolMaxAge,
		Multipart: multipart, MultipartMaxAge: cfg.MultipartMaxAge, Interval: cfg.SweepInterval, Logger: s.log}
	api.Register(e)
	console.New(console.Config{Storage: s.store, Refs: s.refs, Installations: installations, Tokens: tokens, Logger: s.log}).Register(e)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})))
	e.GET("/healthz", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	e.GET("/readyz", s.ready)
	if cfg.Pprof {
		e.GET("/debug/pprof/*", echo.WrapHandler(http.DefaultServeMux))
	}
	return e, nil
}

// connectIncus connects to the configured Incus (or LXD) server.
func connectIncus(ctx context.Context, cfg Config) (*incus.ProtocolIncus, error) {
	var c *incus.ProtocolIncus
	var err error
	if path, ok := strings.CutPrefix(cfg.Incus, "unix://"); ok {
		c, err = incus.ConnectIncusUnix(ctx, path, nil)
	} else {
		args := &incus.ConnectionArgs{UserAgent: "uplink"}
		for _, f := range []struct {
			path string
			into *string
		}{{cfg.IncusCert, &args.TLSClientCert}, {cfg.IncusKey, &args.TLSClientKey}, {cfg.IncusServerCert, &args.TLSServerCert}} {
			if f.path == "" {
				continue
			}
			b, rerr := os.ReadFile(f.path)
			if rerr != nil {
				return nil, fmt.Errorf("incus: %w", rerr)
			}
			*f.into = string(b)
		}
		c, err = incus.ConnectIncus(ctx, cfg.Incus, args)
	}
	if err != nil {
		return nil, fmt.Errorf("incus %s: %w", cfg.Incus, err)
	}
	return c, nil
}
