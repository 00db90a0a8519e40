package distribution

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/uplinkhq/uplink/distribution/artifact"
)

// ClientIndexConfig configures ClientIndexes.
type ClientIndexConfig struct {
	// Redis shares what clients received between replicas (a client may
	// fetch its index from one and its packages from another); nil keeps
	// it in this process.
	Redis  redis.UniversalClient
	Prefix string
	// Namespace, when set, is the Redis key prefix of this deployment (the
	// ref cache's: Prefix and the storage's identity), so that deployments
	// sharing a Redis never read each other's clients; false while it is
	// unknown, and Redis is then left alone. Nil: Prefix.
	Namespace func(context.Context) (string, bool)
	// TTL is how long a client's index is remembered after it last
	// received it. apk installs against its cached index for 4 hours
	// before asking again (apk-protocol.md §7.2), so it should be longer.
	TTL time.Duration
	// Refresh is how often an unchanged answer is written to Redis again
	// (renewing it there); a changed one is written at once.
	Refresh time.Duration
	// RedisTimeout bounds each Redis call on the request path.
	RedisTimeout time.Duration
	// MaxEntries bounds the (client, app, branch) entries held in memory.
	MaxEntries int
	// RefStaleness bounds how long a replica may still answer a branch's
	// previous commit after the branch moved (the ref cache's TTL): past
	// TTL plus this, nobody can hold an older index of the branch.
	RefStaleness time.Duration
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
}

// ClientIndexes remembers, per client address, app and branch, which
// commit's index the client last received through the branch, so that a
// package it asks for later comes from that commit: CI may rebuild an
// unchanged package under the same file name with other bytes, which apk
// refuses against the older index (apk-protocol.md §7.6). Redis is
// optional and fails open: on any Redis error the package is served as
// without remembering.
type ClientIndexes struct {
	cfg ClientIndexConfig
	log *slog.Logger
	// A plain LRU rather than golang-lru's expirable one: entries carry
	// their own time (needed anyway to compare with Redis), and v2.0.7's
	// expirable LRU starts a cleanup goroutine that cannot be stopped.
	mem *lru.Cache[clientKey, *clientEntry]
	now func() int64 // unix nanoseconds; replaced in tests

	redis RedisBreaker

	hits                                 *prometheus.CounterVec
	hitServed, hitMissing, hitOutOfRange prometheus.Counter
	redisFails                           prometheus.Counter
}

type clientKey struct {
	addr   netip.Addr
	app    artifact.App
	branch string
}

type clientEntry struct {
	commit string
	seen   atomic.Int64 // when the client last received this commit's index
	synced atomic.Int64 // when it was last written to Redis; 0: not yet
}

// Defaults of ClientIndexConfig (and of uplink serve's flags). The Redis
// ones and DefaultMaxEntries hold for every cache of the distribution side
// that shares its memory through Redis (this one and cache.Refs).
const (
	DefaultClientIndexTTL = 5 * time.Hour
	DefaultRedisTimeout   = 100 * time.Millisecond
	DefaultRedisPrefix    = "uplink:v1:"
	DefaultMaxEntries     = 100_000
)

// NewClientIndexes returns an empty memory of clients' indexes.
func NewClientIndexes(cfg ClientIndexConfig) *ClientIndexes {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultClientIndexTTL
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = time.Minute
	}
	if cfg.RedisTimeout <= 0 {
		cfg.RedisTimeout = DefaultRedisTimeout
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultRedisPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	mem, err := lru.New[clientKey, *clientEntry](cfg.MaxEntries)
	if err != nil {
		panic(err) // only for a size <= 0, excluded above
	}
	c := &ClientIndexes{
		cfg: cfg, log: cfg.Logger, mem: mem,
		now: func() int64 { return time.Now().UnixNano() },
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_distribution_client_index_hits_total",
			Help: "Packages asked for through a branch by a client whose last index of the branch is not its current commit: " +
				"served from the client's commit (served), not in that commit (missing), commit past the fallback window (outside_window).",
		}, []string{"result"}),
		redisFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "uplink_distribution_client_index_redis_errors_total",
			Help: "Redis calls about clients' indexes that failed or timed out; packages were served as without remembering.",
		}),
	}
	c.hitServed = c.hits.WithLabelValues("served")
	c.hitMissing = c.hits.WithLabelValues("missing")
	c.hitOutOfRange = c.hits.WithLabelValues("outside_window")
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(c.hits, c.redisFails)
	}
	return c
}

// Horizon is how long after a branch moved a client may still hold an
// index of one of its earlier commits.
func (c *ClientIndexes) Horizon() time.Duration { return c.cfg.TTL + c.cfg.RefStaleness }

// Received records that client received (200, or 304 keeping its copy)
// the index of commit through branch. It costs no allocation and no Redis
// call while the answer is unchanged and was shared less than Refresh ago.
func (c *ClientIndexes) Received(ctx context.Context, client netip.Addr, app artifact.App, branch, commit string) {
	k := clientKey{client, app, branch}
	now := c.now()
	if e, ok := c.mem.Get(k); ok && e.commit == commit {
		e.seen.Store(now)
		if now-e.synced.Load() < int64(c.cfg.Refresh) || !c.redisUsable() {
			return
		}
		if c.redisSet(ctx, k, commit, now) {
			e.synced.Store(now)
		}
		return
	}
	// The key's strings point into the request's URL: copy them so the
	// entry does not keep the whole URL alive.
	k.app = artifact.App{Org: strings.Clone(app.Org), Name: strings.Clone(app.Name)}
	k.branch = strings.Clone(branch)
	e := &clientEntry{commit: strings.Clone(commit)}
	e.seen.Store(now)
	if c.redisUsable() && c.redisSet(ctx, k, e.commit, now) {
		e.synced.Store(now)
	}
	c.mem.Add(k, e)
}

// Commit returns the commit whose index client last received through
// branch, or "" when none is remembered within the TTL. With Redis, the
// newer of Redis's and this replica's answer wins, and while Redis fails
// the answer is "": this replica cannot know whether the client got a
// newer index from another one since, so the package is served as it
// would be without remembering.
func (c *ClientIndexes) Commit(ctx context.Context, client netip.Addr, app artifact.App, branch string) string {
	k := clientKey{client, app, branch}
	now := c.now()
	var commit string
	var at int64
	if e, ok := c.mem.Get(k); ok {
		if seen := e.seen.Load(); now-seen <= int64(c.cfg.TTL) {
			commit, at = e.commit, seen
		}
	}
	if c.cfg.Redis == nil {
		return commit
	}
	if !c.redisUsable() {
		return ""
	}
	rc, rat, err := c.redisGet(ctx, k)
	if err != nil {
		return ""
	}
	if rc != "" && rat > at && now-rat <= int64(c.cfg.TTL) {
		commit = rc
	}
	return commit
}

// Len is the number of entries held in memory.
func (c *ClientIndexes) Len() int { return c.mem.Len() }

// redisKey is unambiguous: neither an address nor an app holds '|', and
// the branch, which may, comes last.
func (c *ClientIndexes) redisKey(ctx context.Context, k clientKey) (string, bool) {
	ns := c.cfg.Prefix
	if c.cfg.Namespace != nil {
		var ok bool
		if ns, ok = c.cfg.Namespace(ctx); !ok {
			return "", false
		}
	}
	return ns + "client-index:" + k.addr.String() + "|" + k.app.String() + "|" + k.branch, true
}

func (c *ClientIndexes) redisUsable() bool {
	return c.cfg.Redis != nil && c.redis.Usable()
}

// redisFailed counts a failure and logs the start of an outage.
func (c *ClientIndexes) redisFailed(op string, err error) {
	c.redisFails.Inc()
	if c.redis.Failed() {
		c.log.Warn("redis unavailable, clients' indexes are remembered by this replica only", "op", op, "err", err)
	}
}

func (c *ClientIndexes) redisSet(ctx context.Context, k clientKey, commit string, at int64) bool {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RedisTimeout)
	defer cancel()
	key, ok := c.redisKey(ctx, k)
	if !ok {
		return false
	}
	err := c.cfg.Redis.Set(ctx, key, commit+" "+strconv.FormatInt(at, 10), c.cfg.TTL).Err()
	if err != nil {
		c.redisFailed("set", err)
		return false
	}
	return true
}

var errNoNamespace = errors.New("deployment identity unknown")

// redisGet returns "" for a missing or unreadable entry, an error only
// when Redis failed.
func (c *ClientIndexes) redisGet(ctx context.Context, k clientKey) (commit string, at int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RedisTimeout)
	defer cancel()
	key, ok := c.redisKey(ctx, k)
	if !ok {
		return "", 0, errNoNamespace
	}
	v, err := c.cfg.Redis.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return "", 0, nil
	}
	if err != nil {
		c.redisFailed("get", err)
		return "", 0, err
	}
	commit, ts, _ := strings.Cut(v, " ")
	at, perr := strconv.ParseInt(ts, 10, 64)
	if perr != nil || !artifact.IsFullCommit(commit) {
		return "", 0, nil
	}
	return commit, at, nil
}
