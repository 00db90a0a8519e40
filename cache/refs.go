// Package cache puts memory and Redis in front of storage for the read
// path. Only ref pointers can go stale; they are invalidated on publish in
// every replica through Redis pub/sub, with a short TTL as the safety net.
// Redis is optional and fails open: any Redis error falls through to
// storage and is counted.
package cache

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/uplinkhq/uplink/artifact"
	"github.com/uplinkhq/uplink/ref"
)

// RefsConfig configures the ref pointer cache.
type RefsConfig struct {
	// Redis is shared by the replicas; nil keeps the cache in process.
	Redis redis.UniversalClient
	// Prefix namespaces every Redis key and the pub/sub channel.
	Prefix string
	// TTL bounds how long a replica trusts a pointer it holds in memory
	// without hearing of a publish (pub/sub can miss one while Redis is
	// down).
	TTL time.Duration
	// RedisTTL bounds how long a pointer lives in Redis.
	RedisTTL time.Duration
	// RedisTimeout bounds each Redis call on the request path.
	RedisTimeout time.Duration
	// LoadTimeout bounds a storage read, detached from the request that
	// started it (others may be waiting on it).
	LoadTimeout time.Duration
	// MaxEntries bounds the in-memory entries.
	MaxEntries int
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Refs is a ref.Resolver that caches another one.
type Refs struct {
	inner ref.Resolver
	cfg   RefsConfig
	log   *slog.Logger

	mu      sync.Mutex
	entries map[refKey]*refEntry
	// seq counts invalidations; an entry is valid only while no
	// invalidation of its app (or of everything) happened after its load
	// started.
	seq    uint64
	appSeq map[artifact.App]uint64
	allSeq uint64

	sf singleflight.Group
	// redisDownUntil makes the request path skip Redis for a moment after
	// an error, instead of paying a timeout on every request.
	redisDownUntil atomic.Int64

	lookups             *prometheus.CounterVec
	localHit, localMiss prometheus.Counter
	redisFails          prometheus.Counter
}

type refKey struct {
	app  artifact.App
	name string
}

type refEntry struct {
	res     ref.Resolution
	missing bool // a cached not-found
	seq     uint64
	expires time.Time
}

// NewRefs wraps inner.
func NewRefs(inner ref.Resolver, cfg RefsConfig) *Refs {
	if cfg.TTL <= 0 {
		cfg.TTL = 5 * time.Second
	}
	if cfg.RedisTTL <= 0 {
		cfg.RedisTTL = 60 * time.Second
	}
	if cfg.RedisTimeout <= 0 {
		cfg.RedisTimeout = 100 * time.Millisecond
	}
	if cfg.LoadTimeout <= 0 {
		cfg.LoadTimeout = 10 * time.Second
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 100_000
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "uplink:v1:"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Refs{
		inner:   inner,
		cfg:     cfg,
		log:     cfg.Logger,
		entries: map[refKey]*refEntry{},
		appSeq:  map[artifact.App]uint64{},
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_ref_lookups_total",
			Help: "Ref resolutions by cache layer (local, redis, storage) and result.",
		}, []string{"layer", "result"}),
		redisFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "uplink_redis_fallthrough_total",
			Help: "Redis calls that failed or timed out; the request went on to storage.",
		}),
	}
	c.localHit, c.localMiss = c.lookups.WithLabelValues("local", "hit"), c.lookups.WithLabelValues("local", "miss")
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(c.lookups, c.redisFails)
	}
	return c
}

func (c *Refs) validSeq(app artifact.App) uint64 { return max(c.allSeq, c.appSeq[app]) }

// Resolve answers from memory, then Redis, then storage. When storage
// fails, a stale pointer in memory is better than no answer.
func (c *Refs) Resolve(ctx context.Context, app artifact.App, name string) (ref.Resolution, error) {
	k := refKey{app, name}
	now := time.Now()
	c.mu.Lock()
	e := c.entries[k]
	if e != nil && (e.res.Immutable() || e.seq == c.validSeq(app) && now.Before(e.expires)) {
		c.mu.Unlock()
		c.localHit.Inc()
		if e.missing {
			return ref.Resolution{}, &ref.NotFoundError{What: "ref " + name + " of " + app.String()}
		}
		return e.res, nil
	}
	c.mu.Unlock()
	c.localMiss.Inc()

	v, err, _ := c.sf.Do(app.String()+"\x00"+name, func() (any, error) {
		return c.load(context.WithoutCancel(ctx), k)
	})
	if err == nil {
		return v.(ref.Resolution), nil
	}
	if errors.Is(err, ref.ErrNotFound) || e == nil || e.missing {
		return ref.Resolution{}, err
	}
	c.log.Warn("storage failed, serving a stale ref pointer", "app", app.String(), "ref", name, "err", err)
	c.lookups.WithLabelValues("local", "stale").Inc()
	return e.res, nil
}

func (c *Refs) load(ctx context.Context, k refKey) (ref.Resolution, error) {
	c.mu.Lock()
	seq := c.validSeq(k.app)
	c.mu.Unlock()

	gen, genOK := c.redisGen(ctx, k.app)
	if genOK {
		if res, ok := c.redisGet(ctx, k, gen); ok {
			c.store(k, seq, res, false)
			return res, nil
		}
	}

	lctx, cancel := context.WithTimeout(ctx, c.cfg.LoadTimeout)
	defer cancel()
	res, err := c.inner.Resolve(lctx, k.app, k.name)
	switch {
	case err == nil:
		c.lookups.WithLabelValues("storage", "hit").Inc()
		c.store(k, seq, res, false)
		if genOK {
			c.redisSet(ctx, k, gen, res)
		}
	case errors.Is(err, ref.ErrNotFound):
		c.lookups.WithLabelValues("storage", "miss").Inc()
		c.store(k, seq, ref.Resolution{}, true)
	default:
		c.lookups.WithLabelValues("storage", "error").Inc()
	}
	return res, err
}

func (c *Refs) store(k refKey, seq uint64, res ref.Resolution, missing bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.validSeq(k.app) != seq {
		return // invalidated while loading: the value may predate the publish
	}
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.cfg.MaxEntries {
		for old := range c.entries { // evict an arbitrary entry
			delete(c.entries, old)
			break
		}
	}
	c.entries[k] = &refEntry{res: res, missing: missing, seq: seq, expires: time.Now().Add(c.cfg.TTL)}
}

// invalidateLocal drops this replica's pointers of app (all apps when
// app is the zero value).
func (c *Refs) invalidateLocal(app artifact.App) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	if app == (artifact.App{}) {
		c.allSeq = c.seq
		return
	}
	c.appSeq[app] = c.seq
}

// Invalidate drops app's pointers here, in Redis and, through pub/sub, in
// every other replica. Call it after every pointer move.
func (c *Refs) Invalidate(ctx context.Context, app artifact.App) {
	c.invalidateLocal(app)
	if c.cfg.Redis == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	// A new generation orphans every pointer a racing reader may still
	// write under the old one.
	pipe := c.cfg.Redis.TxPipeline()
	pipe.Incr(ctx, c.genKey(app))
	pipe.Expire(ctx, c.genKey(app), 30*24*time.Hour)
	pipe.Publish(ctx, c.channel(), app.String())
	if _, err := pipe.Exec(ctx); err != nil {
		c.redisFails.Inc()
		c.log.Error("redis: invalidation not broadcast; other replicas catch up within the cache TTL", "app", app.String(), "err", err)
	}
}

// Run listens for other replicas' invalidations until ctx ends. Each
// (re)subscription drops every pointer held, since messages may have been
// missed while disconnected.
func (c *Refs) Run(ctx context.Context) {
	if c.cfg.Redis == nil {
		return
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		ps := c.cfg.Redis.Subscribe(ctx, c.channel())
		for {
			msg, err := ps.Receive(ctx)
			if err != nil {
				break
			}
			backoff = 100 * time.Millisecond
			switch m := msg.(type) {
			case *redis.Subscription:
				c.invalidateLocal(artifact.App{})
			case *redis.Message:
				if app, err := artifact.ParseApp(m.Payload); err == nil {
					c.invalidateLocal(app)
				}
			}
		}
		ps.Close()
		// Whatever arrives while we are away is lost: distrust the cache.
		c.invalidateLocal(artifact.App{})
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (c *Refs) channel() string                { return c.cfg.Prefix + "invalidate" }
func (c *Refs) genKey(app artifact.App) string { return c.cfg.Prefix + "gen:" + app.String() }
func (c *Refs) hashKey(app artifact.App, gen string) string {
	return c.cfg.Prefix + "refs:" + app.String() + ":" + gen
}

func (c *Refs) redisUsable() bool {
	return c.cfg.Redis != nil && time.Now().UnixNano() >= c.redisDownUntil.Load()
}

func (c *Refs) redisFailed(op string, err error) {
	c.redisFails.Inc()
	c.lookups.WithLabelValues("redis", "error").Inc()
	c.redisDownUntil.Store(time.Now().Add(time.Second).UnixNano())
	c.log.Warn("redis unavailable, falling through to storage", "op", op, "err", err)
}

func (c *Refs) redisGen(ctx context.Context, app artifact.App) (string, bool) {
	if !c.redisUsable() {
		return "", false
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RedisTimeout)
	defer cancel()
	gen, err := c.cfg.Redis.Get(ctx, c.genKey(app)).Result()
	if errors.Is(err, redis.Nil) {
		return "0", true
	}
	if err != nil {
		c.redisFailed("get generation", err)
		return "", false
	}
	return gen, true
}

func (c *Refs) redisGet(ctx context.Context, k refKey, gen string) (ref.Resolution, bool) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RedisTimeout)
	defer cancel()
	b, err := c.cfg.Redis.HGet(ctx, c.hashKey(k.app, gen), k.name).Bytes()
	if errors.Is(err, redis.Nil) {
		c.lookups.WithLabelValues("redis", "miss").Inc()
		return ref.Resolution{}, false
	}
	if err != nil {
		c.redisFailed("get", err)
		return ref.Resolution{}, false
	}
	var res ref.Resolution
	if err := json.Unmarshal(b, &res); err != nil || res.Commit == "" {
		c.lookups.WithLabelValues("redis", "miss").Inc()
		return ref.Resolution{}, false
	}
	c.lookups.WithLabelValues("redis", "hit").Inc()
	return res, true
}

func (c *Refs) redisSet(ctx context.Context, k refKey, gen string, res ref.Resolution) {
	if !c.redisUsable() {
		return
	}
	b, err := json.Marshal(res)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RedisTimeout)
	defer cancel()
	key := c.hashKey(k.app, gen)
	pipe := c.cfg.Redis.Pipeline()
	pipe.HSet(ctx, key, k.name, b)
	pipe.Expire(ctx, key, c.cfg.RedisTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		c.redisFailed("set", err)
	}
}

// Ping reports whether Redis answers (for /readyz, which reports it but
// does not require it).
func (c *Refs) Ping(ctx context.Context) error {
	if c.cfg.Redis == nil {
		return nil
	}
	return c.cfg.Redis.Ping(ctx).Err()
}

// Prime reads names of app from storage into memory and Redis under the
// current generation. A publish primes the refs it moved, right after
// invalidating them: every replica's first request after a publish then
// finds the pointer in Redis instead of reading storage. It is safe to
// race with other publishes: a pointer stored under a generation is never
// older than that generation's invalidation.
func (c *Refs) Prime(ctx context.Context, app artifact.App, names ...string) {
	ctx = context.WithoutCancel(ctx)
	for _, name := range names {
		k := refKey{app, name}
		c.mu.Lock()
		seq := c.validSeq(app)
		c.mu.Unlock()
		gen, genOK := c.redisGen(ctx, app)
		lctx, cancel := context.WithTimeout(ctx, c.cfg.LoadTimeout)
		res, err := c.inner.Resolve(lctx, app, name)
		cancel()
		if err != nil {
			continue
		}
		c.store(k, seq, res, false)
		if genOK {
			c.redisSet(ctx, k, gen, res)
		}
	}
}
