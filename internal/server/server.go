// Package server wires uplink's parts into the two listeners: distribution
// (what apk fetches) and admin (the API, health and metrics).
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only with --pprof, on the admin listener
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/redis/go-redis/v9"

	"github.com/uplinkhq/uplink/distribution/cache"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/distribution/retention"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/instance/rollout"
	"github.com/uplinkhq/uplink/internal/admin"
	"github.com/uplinkhq/uplink/internal/notify"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/s3"
)

// Config is everything `uplink serve` can be told.
type Config struct {
	Listen       string
	AdminListen  string
	AdminTLSCert string
	AdminTLSKey  string

	DataDir string
	// Storage is "filesystem" (under DataDir) or "s3".
	Storage        string
	S3             s3.Config
	S3CreateBucket bool
	// S3Redirect answers package requests with a 302 to a presigned URL
	// of the object, valid S3RedirectExpiry (distribution.Redirect); only
	// with Storage "s3", ignored otherwise.
	S3Redirect       bool
	S3RedirectExpiry time.Duration

	// Redis is a redis:// URL; empty keeps every cache in process.
	Redis        string
	RedisPrefix  string
	RedisTimeout time.Duration
	RedisTTL     time.Duration
	RefCacheTTL  time.Duration
	// ClientIndexTTL is how long the commit of the index a client got
	// through a branch is remembered, to serve its packages from it.
	ClientIndexTTL time.Duration

	IndexCacheSize int64
	Retention      int
	AllowCIDR      []netip.Prefix

	// ArtifactCacheDir holds the local cache of packages of published
	// commits (default <DataDir>/artifact-cache), at most
	// ArtifactCacheSize bytes; 0 turns the cache off.
	ArtifactCacheDir  string
	ArtifactCacheSize int64

	AdminTokens []string
	MaxUpload   int64

	// Crash clean-up (admin.Sweeper), at start and every SweepInterval: a
	// publish unfinished after PublishGrace is completed; upload spool
	// files untouched for SpoolMaxAge that no process holds are removed,
	// and S3 multipart uploads older than MultipartMaxAge aborted. Zero
	// takes admin's default.
	PublishGrace    time.Duration
	SpoolMaxAge     time.Duration
	MultipartMaxAge time.Duration
	SweepInterval   time.Duration

	// The server's retention policy (retention.Policy: an app's own
	// settings override each field) and how often every app is pruned,
	// on one replica at a time (0: only on request).
	KeepBuilds, KeepOperations int
	KeepAge, PruneInterval     time.Duration
	// KeepHistory bounds each installation's channel history and its
	// archived operations (instance.Config.KeepHistory).
	KeepHistory int

	ShutdownTimeout time.Duration
	AccessLog       bool
	// Pprof serves /debug/pprof/ on the admin listener.
	Pprof bool

	// DistributionURL is how instances reach the distribution listener;
	// it goes into their repository lines.
	DistributionURL string
	// OperationLease is how long a replica may go silent before another
	// takes its operation over; OperationScan how often replicas look.
	OperationLease time.Duration
	OperationScan  time.Duration
	// NoBackendDelay makes each step of the "no instance backend" driver
	// take this long (rehearsals, tests).
	NoBackendDelay time.Duration

	// Incus is unix:///path/to/unix.socket or https://host:8443; empty
	// keeps the "no instance backend" driver.
	Incus           string
	IncusCert       string // PEM files, for https
	IncusKey        string
	IncusServerCert string
	// IncusProject is the project of installations that name none.
	IncusProject string
	// ImageServer, when set, is the simplestreams server images come from.
	ImageServer string
	// IncusProxyDistribution gives every instance a proxy device to this
	// uplink's distribution listener (uplink on the instances' host).
	IncusProxyDistribution bool
	ReconcileInterval      time.Duration
	// AllowIncusLeases admits distribution clients only from addresses
	// leased in the project of an installation of the app.
	AllowIncusLeases bool

	// Listener limits (limits.go); zero takes the Default* value.
	MaxHeaderBytes      int64
	ReadHeaderTimeout   time.Duration
	IdleTimeout         time.Duration
	StallTimeout        time.Duration
	MaxConnections      int
	AdminMaxConnections int
	// DrainDelay is how long Run keeps serving, /readyz answering 503,
	// after its context ends and before the listeners close.
	DrainDelay time.Duration

	// StorageTimeout bounds each storage wait of a distribution read (to
	// the first byte, then per read); past it, 503 + Retry-After, or an
	// aborted body. MaxRanges bounds a request's ranges once coalesced.
	// Zero takes distribution's default.
	StorageTimeout time.Duration
	MaxRanges      int

	// NotifyURLs each get a JSON event on every publish and operation
	// start and end (internal/notify), signed with NotifySecret when set,
	// each POST bounded by NotifyTimeout. NotifyGrace and NotifyRetry
	// tune takeover and retries; zero takes notify's defaults.
	NotifyURLs    []string
	NotifySecret  string
	NotifyTimeout time.Duration
	NotifyGrace   time.Duration
	NotifyRetry   notify.Retry
}

// TokenFile is where a generated admin token is kept, inside DataDir.
const TokenFile = "admin-token"

// Server is a configured uplink.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   storage.Driver
	refs    *ref.Store
	cache   *cache.Refs
	rdb     *redis.Client
	dist    *echo.Echo
	admin   *echo.Echo
	distSrv *http.Server
	admSrv  *http.Server
	distLn  net.Listener
	admLn   net.Listener
	stop    context.CancelFunc
	engine  *operation.Engine
	done    chan struct{}

	reconciler *rollout.Reconciler
	sweeper    *admin.Sweeper
	pruner     *retention.Pruner
	httpm      *httpMetrics
	draining   atomic.Bool

	// presigner is the driver's (unwrapped) with S3Redirect, else nil.
	presigner storage.Presigner
	// notifier is nil without NotifyURLs.
	notifier *notify.Notifier
}

func newEcho(log *slog.Logger, accessLog bool) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = echo.ExtractIPDirect()
	// Every response carries an X-Request-Id (the client's own, or a new
	// one), which the log lines of its request name: the access log's,
	// and those of a failure after the headers, when no status can tell.
	e.Use(middleware.RequestID())
	if accessLog {
		e.Use(middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
			LogStatus: true, LogURI: true, LogMethod: true, LogLatency: true, LogRemoteIP: true,
			LogRequestID: true, LogResponseSize: true, LogUserAgent: true, HandleError: true,
			LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
				log.LogAttrs(c.Request().Context(), slog.LevelInfo, "request",
					slog.String("id", v.RequestID), slog.String("method", v.Method), slog.String("uri", v.URI),
					slog.Int("status", v.Status), slog.Int64("bytes", v.ResponseSize),
					slog.Duration("latency", v.Latency), slog.String("remote", v.RemoteIP),
					slog.String("user_agent", v.UserAgent))
				return nil
			},
		}))
	}
	e.Use(middleware.Recover())
	return e
}

// adminTokens returns the configured tokens, or the one kept in the data
// directory, generating it on first start.
func (s *Server) adminTokens() ([]string, error) {
	if len(s.cfg.AdminTokens) > 0 {
		return s.cfg.AdminTokens, nil
	}
	path := filepath.Join(s.cfg.DataDir, TokenFile)
	if b, err := os.ReadFile(path); err == nil {
		return s.tokenFromFile(path, b)
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o755); err != nil {
		return nil, err
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	token := hex.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) { // another process won the race
		time.Sleep(100 * time.Millisecond) // and is writing it
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return s.tokenFromFile(path, b)
	}
	if err != nil {
		return nil, fmt.Errorf("writing the admin token: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(token + "\n"); err != nil {
		return nil, err
	}
	s.log.Info("generated an admin token", "path", path)
	return []string{token}, nil
}

// tokenFromFile refuses an empty file rather than start a server that no
// request can authenticate to.
func (s *Server) tokenFromFile(path string, b []byte) ([]string, error) {
	t := strings.TrimSpace(string(b))
	if t == "" {
		return nil, fmt.Errorf("admin token file %s is empty: delete it to generate a new token, or pass --admin-token", path)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		s.log.Warn("admin token file is readable by others; chmod 600 it", "path", path, "mode", st.Mode().Perm().String())
	}
	return []string{t}, nil
}

// readyCheckTimeout bounds each of /readyz's checks on its own, so that a
// frozen storage cannot make Redis look down too.
const readyCheckTimeout = 2 * time.Second

// ready answers 200 when storage answers, 503 when it does not or while
// draining; Redis is reported, not required. Every value is a string, so
// probes that read a flat object keep working.
func (s *Server) ready(c echo.Context) error {
	ctx := c.Request().Context()
	out := map[string]string{"status": "ok", "storage": "ok", "redis": "disabled"}
	var mu sync.Mutex
	var wg sync.WaitGroup
	check := func(name string, fn func(context.Context) error) {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, readyCheckTimeout)
			defer cancel()
			err := fn(cctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				out[name] = "unreachable: " + err.Error()
			} else {
				out[name] = "ok"
			}
		})
	}
	check("storage", func(ctx context.Context) error {
		if _, err := s.store.Stat(ctx, "meta/readiness-probe"); err != nil && !storage.IsNotFound(err) {
			return err
		}
		return nil
	})
	if s.rdb != nil {
		check("redis", func(ctx context.Context) error { return s.rdb.Ping(ctx).Err() })
	}
	wg.Wait()
	status := http.StatusOK
	if out["storage"] != "ok" {
		status, out["status"] = http.StatusServiceUnavailable, "storage unreachable"
	}
	if out["redis"] != "ok" && out["redis"] != "disabled" {
		out["redis"] += " (serving from storage)"
	}
	if s.draining.Load() {
		status, out["status"] = http.StatusServiceUnavailable, "draining"
	}
	return c.JSON(status, out)
}

// Start binds both listeners and serves in the background.
func (s *Server) Start(ctx context.Context) error {
	var err error
	if s.distLn, err = net.Listen("tcp", s.cfg.Listen); err != nil {
		return fmt.Errorf("distribution listener: %w", err)
	}
	if s.admLn, err = net.Listen("tcp", s.cfg.AdminListen); err != nil {
		s.distLn.Close()
		return fmt.Errorf("admin listener: %w", err)
	}
	s.distSrv, s.distLn = s.newHTTPServer(s.distLn, s.dist, s.limitsFor("distribution"))
	s.admSrv, s.admLn = s.newHTTPServer(s.admLn, s.admin, s.limitsFor("admin"))
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = stop
	go s.cache.Run(runCtx)
	// Publishes a crash interrupted are completed before this replica
	// answers (bounded: storage may be down), then on a schedule.
	sweepCtx, cancelSweep := context.WithTimeout(runCtx, admin.StartTimeout)
	s.sweeper.Sweep(sweepCtx)
	cancelSweep()
	go s.sweeper.Run(runCtx)
	go s.pruner.Run(runCtx)
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		var wg sync.WaitGroup
		if s.notifier != nil {
			wg.Go(func() { s.notifier.Run(runCtx) })
		}
		s.engine.Run(runCtx)
		wg.Wait()
	}()
	if s.reconciler != nil {
		go s.reconciler.Run(runCtx)
	}
	go s.serve(s.distSrv, s.distLn, "", "")
	go s.serve(s.admSrv, s.admLn, s.cfg.AdminTLSCert, s.cfg.AdminTLSKey)
	s.log.Info("uplink serving", "distribution", s.distLn.Addr().String(), "admin", s.admLn.Addr().String(),
		"storage", s.cfg.Storage, "redis", s.rdb != nil)
	return nil
}

func (s *Server) serve(srv *http.Server, ln net.Listener, cert, key string) {
	var err error
	if cert != "" {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		err = srv.ServeTLS(ln, cert, key)
	} else {
		err = srv.Serve(ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("listener stopped", "addr", ln.Addr().String(), "err", err)
	}
}

// DistributionAddr is the bound distribution address (after Start).
func (s *Server) DistributionAddr() string { return s.distLn.Addr().String() }

// AdminAddr is the bound admin address (after Start).
func (s *Server) AdminAddr() string { return s.admLn.Addr().String() }

// Shutdown stops accepting connections and waits for in-flight requests
// (downloads included) until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	errs := []error{s.distSrv.Shutdown(ctx), s.admSrv.Shutdown(ctx)}
	// Operations in flight stop here; their leases lapse and a replica
	// (or this one, restarted) resumes them.
	s.stop()
	<-s.done
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	return errors.Join(errs...)
}

// Drain makes /readyz answer 503 and every response ask its client to
// reconnect, then keeps serving for delay: a load balancer sees the
// replica leave and moves its clients before the listeners close.
func (s *Server) Drain(delay time.Duration) {
	s.draining.Store(true)
	s.distSrv.SetKeepAlivesEnabled(false)
	if delay > 0 {
		s.log.Info("draining: /readyz answers 503 before the listeners close", "delay", delay)
		time.Sleep(delay)
	}
}

// Run serves until ctx ends, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	s.Drain(s.cfg.DrainDelay)
	s.log.Info("shutting down: waiting for in-flight requests", "timeout", s.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	return s.Shutdown(sctx)
}
