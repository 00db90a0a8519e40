// Package cache puts memory and Redis in front of storage for the read
// path. Only ref pointers can go stale; they are invalidated on publish in
// every replica through Redis pub/sub, with a short TTL as the safety net.
// Redis is optional and fails open: any Redis error falls through to
// storage and is counted.
//
// Staleness is bounded by RefsConfig.TTL whatever Redis does: a pointer,
// in memory or in Redis, carries the time it was read from storage, and
// every replica trusts it only until that time plus TTL (clock skew
// between replicas adds to the bound). A publish that Redis missed is
// announced again in the background until it gets through.
package cache

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
)

// RefsConfig configures the ref pointer cache.
type RefsConfig struct {
	// Redis is shared by the replicas; nil keeps the cache in process.
	Redis redis.UniversalClient
	// Prefix namespaces every Redis key and the pub/sub channel.
	Prefix string
	// TTL bounds how long any replica trusts a pointer after it was read
	// from storage, whether it holds it in memory or finds it in Redis, so
	// a publish is seen everywhere within TTL even if pub/sub misses it.
	TTL time.Duration
	// RedisTTL bounds how long a pointer lives in Redis, and how long a
	// publish that Redis missed is announced again.
	RedisTTL time.Duration
	// RedisTimeout bounds each Redis call on the request path.
	RedisTimeout time.Duration
	// LoadTimeout bounds a storage read, detached from the request that
	// started it (others may be waiting on it).
	LoadTimeout time.Duration
	// MaxEntries bounds the in-memory entries.
	MaxEntries int
	// Identity names the storage behind the resolver (StorageIdentity).
	// Redis keys, pointers and the channel are kept apart per identity, so
	// deployments that share a Redis and a prefix never serve each other's
	// heads. Redis is left alone until the identity is known. Nil: a
	// single unnamed deployment.
	Identity   func(context.Context) (string, error)
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Bounds of the queue of announcements that Redis missed: one entry per
// app (later publishes of the app join it), each priming a few refs.
const (
	maxPendingApps  = 1024
	maxPendingNames = 64
)

// Refs is a ref.Resolver that caches another one.
type Refs struct {
	inner ref.Resolver
	cfg   RefsConfig
	log   *slog.Logger

	mu      sync.Mutex
	entries *simplelru.LRU[refKey, *refEntry] // bounded by MaxEntries
	// seq counts invalidations; an entry is valid only while no
	// invalidation of its app (or of everything) happened after its load
	// started.
	seq    uint64
	appSeq map[artifact.App]uint64
	allSeq uint64

	sf singleflight.Group
	// redis makes the request path skip Redis for a moment after an error,
	// instead of paying a timeout on every request.
	redis distribution.RedisBreaker

	// id is the deployment identity, ns the Redis namespace built from it;
	// both nil until Identity answered.
	id, ns    atomic.Pointer[string]
	idRetryAt atomic.Int64

	amu     sync.Mutex
	pending map[artifact.App]*announcement
	wake    chan struct{}

	lookups             *prometheus.CounterVec
	localHit, localMiss prometheus.Counter
	redisFails          prometheus.Counter
	announces           *prometheus.CounterVec
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

// announcement is a publish of an app that Redis has not heard of yet.
type announcement struct {
	last    time.Time // of the latest publish it stands for
	version uint64    // bumped by every publish that joins it
	names   map[string]struct{}
}

// redisPointer is a pointer as Redis holds it.
type redisPointer struct {
	ref.Resolution
	// ReadAt is when the pointer was read from storage (Unix ms): the
	// start of the read, so a publish racing it is never hidden longer
	// than TTL.
	ReadAt     int64  `json:"read_at"`
	Deployment string `json:"deployment"`
}

// Defaults of RefsConfig's TTLs (and of uplink serve's flags).
const (
	DefaultRefTTL   = 5 * time.Second
	DefaultRedisTTL = time.Minute
)

// NewRefs wraps inner.
func NewRefs(inner ref.Resolver, cfg RefsConfig) *Refs {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultRefTTL
	}
	if cfg.RedisTTL <= 0 {
		cfg.RedisTTL = DefaultRedisTTL
	}
	if cfg.RedisTimeout <= 0 {
		cfg.RedisTimeout = distribution.DefaultRedisTimeout
	}
	if cfg.LoadTimeout <= 0 {
		cfg.LoadTimeout = 10 * time.Second
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = distribution.DefaultMaxEntries
	}
	if cfg.Prefix == "" {
		cfg.Prefix = distribution.DefaultRedisPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Refs{
		inner:   inner,
		cfg:     cfg,
		log:     cfg.Logger,
		appSeq:  map[artifact.App]uint64{},
		pending: map[artifact.App]*announcement{},
		wake:    make(chan struct{}, 1),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_ref_lookups_total",
			Help: "Ref resolutions by cache layer (local, redis, storage) and result; a Redis pointer older than the ref cache TTL is a stale miss, one of another deployment a foreign miss.",
		}, []string{"layer", "result"}),
		redisFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "uplink_redis_fallthrough_total",
			Help: "Redis calls that failed or timed out; the request went on to storage.",
		}),
		announces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_redis_announce_retries_total",
			Help: "Publishes that Redis missed, by how their retried announcement ended: delivered, expired (given up after the Redis TTL) or dropped (queue full).",
		}, []string{"result"}),
	}
	c.entries, _ = simplelru.NewLRU[refKey, *refEntry](cfg.MaxEntries, nil)
	if cfg.Identity == nil {
		id, ns := "", cfg.Prefix
		c.id.Store(&id)
		c.ns.Store(&ns)
	}
	c.localHit, c.localMiss = c.lookups.WithLabelValues("local", "hit"), c.lookups.WithLabelValues("local", "miss")
	if cfg.Registerer != nil {
		pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "uplink_redis_announce_pending",
			Help: "Apps whose latest publish Redis has not heard of yet; retried in the background.",
		}, func() float64 {
			c.amu.Lock()
			defer c.amu.Unlock()
			return float64(len(c.pending))
		})
		cfg.Registerer.MustRegister(c.lookups, c.redisFails, c.announces, pending)
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
	e, _ := c.entries.Get(k)
	// A full SHA never moves, but its build can be deleted: only an
	// invalidation of the app drops it.
	if e != nil && e.seq == c.validSeq(app) && (e.res.Immutable() || now.Before(e.expires)) {
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
		if res, readAt, ok := c.redisGet(ctx, k, gen); ok {
			c.store(k, seq, res, false, readAt)
			return res, nil
		}
	}

	readAt := time.Now()
	lctx, cancel := context.WithTimeout(ctx, c.cfg.LoadTimeout)
	defer cancel()
	res, err := c.inner.Resolve(lctx, k.app, k.name)
	switch {
	case err == nil:
		c.lookups.WithLabelValues("storage", "hit").Inc()
		c.store(k, seq, res, false, readAt)
		if genOK {
			c.redisSet(ctx, k, gen, res, readAt)
		}
	case errors.Is(err, ref.ErrNotFound):
		c.lookups.WithLabelValues("storage", "miss").Inc()
		c.store(k, seq, ref.Resolution{}, true, readAt)
	default:
		c.lookups.WithLabelValues("storage", "error").Inc()
	}
	return res, err
}

// store keeps a pointer read from storage at readAt until readAt+TTL,
// however it got here.
func (c *Refs) store(k refKey, seq uint64, res ref.Resolution, missing bool, readAt time.Time) {
	expires := readAt.Add(c.cfg.TTL)
	if limit := time.Now().Add(c.cfg.TTL); expires.After(limit) {
		expires = limit // read "in the future" by a replica whose clock is ahead
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.validSeq(k.app) != seq {
		return // invalidated while loading: the value may predate the publish
	}
	c.entries.Add(k, &refEntry{res: res, missing: missing, seq: seq, expires: expires})
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
// every other replica. Call it after every pointer move. When Redis cannot
// be told now, the announcement is queued and Run retries it.
func (c *Refs) Invalidate(ctx context.Context, app artifact.App) {
	c.invalidateLocal(app)
	if c.cfg.Redis == nil {
		return
	}
	// Right after a failure, queue at once rather than make the publish
	// wait for another timeout.
	if !c.redisUsable() || !c.announce(ctx, app, nil) {
		c.enqueue(app, nil)
	}
}

// announce tells every replica through Redis that app's pointers moved,
// then primes names under the new generation. It reports whether Redis
// heard of it.
func (c *Refs) announce(ctx context.Context, app artifact.App, names []string) bool {
	if _, ok := c.deployment(ctx); !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(10*c.cfg.RedisTimeout, time.Second))
	defer cancel()
	// A new generation orphans every pointer a racing reader may still
	// write under the old one.
	pipe := c.cfg.Redis.TxPipeline()
	incr := pipe.Incr(ctx, c.genKey(app))
	pipe.Expire(ctx, c.genKey(app), 30*24*time.Hour)
	pipe.Publish(ctx, c.channel(), app.String())
	if _, err := pipe.Exec(ctx); err != nil {
		c.redisFailed("announce a publish", err)
		return false
	}
	c.redis.Answered() // it answered: the request path may use it again
	gen := strconv.FormatInt(incr.Val(), 10)
	for _, name := range names {
		c.primeOne(ctx, refKey{app, name}, gen, true)
	}
	return true
}

// enqueue remembers that Redis missed a publish of app (and the refs it
// moved, to prime), for Run to announce it again.
func (c *Refs) enqueue(app artifact.App, names []string) {
	c.amu.Lock()
	a := c.pending[app]
	if a == nil {
		if len(c.pending) >= maxPendingApps {
			var oldest artifact.App
			for other, o := range c.pending {
				if oldest == (artifact.App{}) || o.last.Before(c.pending[oldest].last) {
					oldest = other
				}
			}
			delete(c.pending, oldest)
			c.announces.WithLabelValues("dropped").Inc()
			c.log.Warn("redis: too many unannounced publishes; dropped the oldest, whose replicas catch up within the ref cache TTL", "app", oldest.String())
		}
		a = &announcement{names: map[string]struct{}{}}
		c.pending[app] = a
	}
	a.last = time.Now()
	a.version++
	for _, n := range names {
		if len(a.names) < maxPendingNames {
			a.names[n] = struct{}{}
		}
	}
	c.amu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// retryAnnouncements announces queued publishes until ctx ends. A small
// loop rather than one backoff.Retry per publish: one outage delays every
// app's announcement alike, so one schedule (doubling from 100ms to 5s,
// with jitter) serves them all and Redis gets one attempt at a time.
func (c *Refs) retryAnnouncements(ctx context.Context) {
	const minDelay, maxDelay = 100 * time.Millisecond, 5 * time.Second
	delay := minDelay
	var timer *time.Timer
	var tick <-chan time.Time
	arm := func() {
		timer = time.NewTimer(delay/2 + rand.N(delay/2+1))
		tick = timer.C
	}
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-c.wake:
			if tick == nil {
				arm()
			}
		case <-tick:
			tick = nil
			if c.flushAnnouncements(ctx) {
				delay = minDelay
			} else {
				delay = min(2*delay, maxDelay)
				arm()
			}
		}
	}
}

// flushAnnouncements tries every queued announcement once, stopping at
// the first failure, and reports whether the queue is empty. One is given
// up once RedisTTL (at least TTL) has passed since its latest publish:
// by then no replica trusts a pointer read before it.
func (c *Refs) flushAnnouncements(ctx context.Context) bool {
	type item struct {
		app     artifact.App
		version uint64
		last    time.Time
		names   []string
	}
	c.amu.Lock()
	items := make([]item, 0, len(c.pending))
	for app, a := range c.pending {
		it := item{app: app, version: a.version, last: a.last}
		for n := range a.names {
			it.names = append(it.names, n)
		}
		items = append(items, it)
	}
	c.amu.Unlock()
	giveUp := max(c.cfg.RedisTTL, c.cfg.TTL)
	for _, it := range items {
		if ctx.Err() != nil {
			return false
		}
		if time.Since(it.last) > giveUp {
			c.dequeue(it.app, it.version)
			c.announces.WithLabelValues("expired").Inc()
			c.log.Warn("redis: gave up announcing a publish; every replica has caught up through the ref cache TTL", "app", it.app.String(), "since", it.last)
			continue
		}
		if !c.announce(ctx, it.app, it.names) {
			return false
		}
		c.dequeue(it.app, it.version)
		c.announces.WithLabelValues("delivered").Inc()
		c.log.Info("redis: announced a publish it had missed", "app", it.app.String(), "refs", it.names, "late_by", time.Since(it.last).Round(time.Millisecond))
	}
	c.amu.Lock()
	defer c.amu.Unlock()
	return len(c.pending) == 0
}

// dequeue drops app's announcement unless a publish joined it meanwhile.
func (c *Refs) dequeue(app artifact.App, version uint64) {
	c.amu.Lock()
	defer c.amu.Unlock()
	if a := c.pending[app]; a != nil && a.version == version {
		delete(c.pending, app)
	}
}

// Run listens for other replicas' invalidations and announces the
// publishes Redis missed, until ctx ends. Each (re)subscription drops
// every pointer held, since messages may have been missed while
// disconnected.
func (c *Refs) Run(ctx context.Context) {
	if c.cfg.Redis == nil {
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { c.retryAnnouncements(ctx) })
	backoff := 100 * time.Millisecond
	wait := func() {
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	// The channel is named after the deployment.
	for ctx.Err() == nil {
		if _, ok := c.deployment(ctx); ok {
			break
		}
		wait()
	}
	backoff = 100 * time.Millisecond
	for ctx.Err() == nil {
		ps := c.cfg.Redis.Subscribe(ctx, c.channel())
		// Receive does not return on cancellation; closing does.
		unhook := context.AfterFunc(ctx, func() { ps.Close() })
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
		unhook()
		ps.Close()
		// Whatever arrives while we are away is lost: distrust the cache.
		c.invalidateLocal(artifact.App{})
		wait()
	}
}

// deployment returns the storage's identity, asking Identity (once at a
// time, at most once a second while it fails) until it answers.
func (c *Refs) deployment(ctx context.Context) (string, bool) {
	if id := c.id.Load(); id != nil {
		return *id, true
	}
	if time.Now().UnixNano() < c.idRetryAt.Load() {
		return "", false
	}
	v, err, _ := c.sf.Do("\x00identity", func() (any, error) {
		if id := c.id.Load(); id != nil {
			return *id, nil
		}
		ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.LoadTimeout)
		defer cancel()
		id, err := c.cfg.Identity(ictx)
		if err != nil {
			c.idRetryAt.Store(time.Now().Add(time.Second).UnixNano())
			c.log.Warn("redis: deployment identity unknown, leaving Redis alone for now", "err", err)
			return "", err
		}
		ns := c.cfg.Prefix + id + ":"
		c.ns.Store(&ns)
		c.id.Store(&id)
		return id, nil
	})
	if err != nil {
		return "", false
	}
	return v.(string), true
}

// Namespace is the prefix of this deployment's Redis keys (the Redis
// prefix and the storage's identity), for other users of the same Redis;
// false while the identity is unknown.
func (c *Refs) Namespace(ctx context.Context) (string, bool) {
	if _, ok := c.deployment(ctx); !ok {
		return "", false
	}
	return *c.ns.Load(), true
}

// Keys and the channel; only valid once deployment answered.
func (c *Refs) channel() string                { return *c.ns.Load() + "invalidate" }
func (c *Refs) genKey(app artifact.App) string { return *c.ns.Load() + "gen:" + app.String() }
func (c *Refs) hashKey(app artifact.App, gen string) string {
	return *c.ns.Load() + "refs:" + app.String() + ":" + gen
}

func (c *Refs) redisUsable() bool {
	return c.cfg.Redis != nil && c.redis.Usable()
}

func (c *Refs) redisFailed(op string, err error) {
	c.redisFails.Inc()
	c.lookups.WithLabelValues("redis", "error").Inc()
	c.redis.Failed()
	c.log.Warn("redis unavailable, falling through to storage", "op", op, "err", err)
}

func (c *Refs) redisGen(ctx context.Context, app artifact.App) (string, bool) {
	if !c.redisUsable() {
		return "", false
	}
	if _, ok := c.deployment(ctx); !ok {
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

// redisGet returns the pointer Redis holds, if it is this deployment's and
// young enough to trust, with when it was read from storage.
func (c *Refs) redisGet(ctx context.Context, k refKey, gen string) (ref.Resolution, time.Time, bool) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RedisTimeout)
	defer cancel()
	b, err := c.cfg.Redis.HGet(ctx, c.hashKey(k.app, gen), k.name).Bytes()
	if errors.Is(err, redis.Nil) {
		c.lookups.WithLabelValues("redis", "miss").Inc()
		return ref.Resolution{}, time.Time{}, false
	}
	if err != nil {
		c.redisFailed("get", err)
		return ref.Resolution{}, time.Time{}, false
	}
	var p redisPointer
	if err := json.Unmarshal(b, &p); err != nil || p.Commit == "" || p.ReadAt == 0 {
		c.lookups.WithLabelValues("redis", "miss").Inc()
		return ref.Resolution{}, time.Time{}, false
	}
	if id, _ := c.deployment(ctx); p.Deployment != id {
		c.lookups.WithLabelValues("redis", "foreign").Inc()
		return ref.Resolution{}, time.Time{}, false
	}
	readAt := time.UnixMilli(p.ReadAt)
	// A pointer from the future (a replica's clock ahead) is trusted no
	// longer than one from now.
	if age := time.Since(readAt); !p.Immutable() && (age >= c.cfg.TTL || -age >= c.cfg.TTL) {
		c.lookups.WithLabelValues("redis", "stale").Inc()
		return ref.Resolution{}, time.Time{}, false
	}
	c.lookups.WithLabelValues("redis", "hit").Inc()
	return p.Resolution, readAt, true
}

// redisSet stores a pointer read from storage at readAt; it reports
// whether Redis took it.
func (c *Refs) redisSet(ctx context.Context, k refKey, gen string, res ref.Resolution, readAt time.Time) bool {
	if !c.redisUsable() {
		return false
	}
	id, ok := c.deployment(ctx)
	if !ok {
		return false
	}
	b, err := json.Marshal(redisPointer{Resolution: res, ReadAt: readAt.UnixMilli(), Deployment: id})
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RedisTimeout)
	defer cancel()
	key := c.hashKey(k.app, gen)
	pipe := c.cfg.Redis.Pipeline()
	pipe.HSet(ctx, key, k.name, b)
	pipe.Expire(ctx, key, c.cfg.RedisTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		c.redisFailed("set", err)
		return false
	}
	return true
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
// older than that generation's invalidation. Names Redis could not take
// are primed again with the queued announcement.
func (c *Refs) Prime(ctx context.Context, app artifact.App, names ...string) {
	ctx = context.WithoutCancel(ctx)
	var missed []string
	for _, name := range names {
		gen, genOK := c.redisGen(ctx, app)
		if !c.primeOne(ctx, refKey{app, name}, gen, genOK) && c.cfg.Redis != nil {
			missed = append(missed, name)
		}
	}
	if len(missed) > 0 {
		c.enqueue(app, missed)
	}
}

// primeOne reads k from storage into memory and, when toRedis, into Redis
// under gen. It reports whether Redis took it.
func (c *Refs) primeOne(ctx context.Context, k refKey, gen string, toRedis bool) bool {
	c.mu.Lock()
	seq := c.validSeq(k.app)
	c.mu.Unlock()
	readAt := time.Now()
	lctx, cancel := context.WithTimeout(ctx, c.cfg.LoadTimeout)
	res, err := c.inner.Resolve(lctx, k.app, k.name)
	cancel()
	if err != nil {
		return true // nothing to prime: storage answers readers itself
	}
	c.store(k, seq, res, false, readAt)
	if !toRedis {
		return false
	}
	return c.redisSet(ctx, k, gen, res, readAt)
}
