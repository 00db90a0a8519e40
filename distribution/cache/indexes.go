package cache

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
)

// IndexKey names an index file of a commit.
type IndexKey struct {
	App          artifact.App
	Commit, Arch string
	File         string
}

func (k IndexKey) String() string { return artifact.Key(k.App, k.Commit, k.Arch, k.File) }

// Indexes is the index cache, a decorator of a distribution.Protocol: a
// byte-bounded LRU of the indexes of published commits, each read once
// however many requests ask at the same time. Nothing in it is ever
// invalidated: the bytes under a published commit never change.
type Indexes struct {
	distribution.Protocol
	max int64
	dir string // where indexes are kept as files to send, "" for none
	log *slog.Logger

	fileFailed atomic.Bool // a KeepFile failed, and was logged

	mu   sync.Mutex
	lru  *simplelru.LRU[IndexKey, *distribution.Index]
	size int64 // bytes held; kept by add and the eviction callback

	sf           singleflight.Group
	lookups      *prometheus.CounterVec
	hits, misses prometheus.Counter
	bytes        prometheus.Gauge
}

// NewIndexes caches at most maxBytes of inner's indexes. With a dir, each
// cached index is also written to a file without a name there, which
// responses are sent from by sendfile (see distribution.Index.KeepFile):
// the disk holds as much again as memory, until an evicted index's last
// response ends and the file is closed.
func NewIndexes(inner distribution.Protocol, maxBytes int64, dir string, reg prometheus.Registerer) *Indexes {
	c := &Indexes{
		Protocol: inner,
		max:      maxBytes,
		dir:      dir,
		log:      slog.Default(),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_index_cache_lookups_total",
			Help: "Index lookups in the in-memory cache by result (hit, miss).",
		}, []string{"result"}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "uplink_index_cache_bytes",
			Help: "Bytes of index data held in memory.",
		}),
	}
	// Bounded by bytes, not by count.
	c.lru, _ = simplelru.NewLRU(math.MaxInt, func(_ IndexKey, idx *distribution.Index) {
		c.size -= int64(len(idx.Data))
	})
	c.hits, c.misses = c.lookups.WithLabelValues("hit"), c.lookups.WithLabelValues("miss")
	if reg != nil {
		reg.MustRegister(c.lookups, c.bytes)
	}
	return c
}

// Index answers from memory, else asks the inner Protocol once for all
// the callers waiting on the same index. The load runs detached from any
// one caller's context, so a caller that gives up does not fail the
// others; a failed load is not kept, and answers every caller waiting on
// it.
func (c *Indexes) Index(ctx context.Context, req distribution.Request, res ref.Resolution) (*distribution.Index, error) {
	key := IndexKey{App: req.Application(), Commit: res.Commit, Arch: req.Arch, File: req.File}
	if idx := c.lookup(key); idx != nil {
		c.hits.Inc()
		return idx, nil
	}
	c.misses.Inc()
	ch := c.sf.DoChan(key.String(), func() (any, error) {
		if idx := c.lookup(key); idx != nil {
			return idx, nil
		}
		idx, err := c.Protocol.Index(context.WithoutCancel(ctx), req, res)
		if err != nil {
			return nil, err
		}
		if c.dir != "" && int64(len(idx.Data)) <= c.max {
			if err := idx.KeepFile(c.dir); err != nil && !c.fileFailed.Swap(true) {
				// Once: a file system without O_TMPFILE fails every index.
				c.log.Warn("index cache: indexes kept in memory only, sent by write", "dir", c.dir, "err", err)
			}
		}
		c.add(key, idx)
		return idx, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*distribution.Index), nil
	}
}

func (c *Indexes) lookup(key IndexKey) *distribution.Index {
	c.mu.Lock()
	defer c.mu.Unlock()
	idx, _ := c.lru.Get(key)
	return idx
}

func (c *Indexes) add(key IndexKey, idx *distribution.Index) {
	n := int64(len(idx.Data))
	if n > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lru.Contains(key) {
		return
	}
	c.lru.Add(key, idx)
	c.size += n
	for c.size > c.max {
		c.lru.RemoveOldest()
	}
	c.bytes.Set(float64(c.size))
}
