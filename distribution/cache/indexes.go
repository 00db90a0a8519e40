package cache

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/uplinkhq/uplink/distribution/artifact"
)

// Blob is an immutable object held in memory, with what serving it needs.
type Blob struct {
	Data    []byte
	ETag    string // quoted, ready for the header
	ModTime time.Time
	// Memo is the serving layer's: what it derives from the blob (headers)
	// lives and dies with it.
	Memo sync.Map
}

// BlobKey names an artifact file of a commit.
type BlobKey struct {
	App          artifact.App
	Commit, Arch string
	File         string
}

func (k BlobKey) String() string { return artifact.Key(k.App, k.Commit, k.Arch, k.File) }

// Loader reads a blob from storage.
type Loader func(ctx context.Context, key BlobKey) (*Blob, error)

// Blobs is a byte-bounded LRU of immutable objects (the indexes of
// published commits). Nothing in it is ever invalidated: the bytes under a
// published commit never change.
type Blobs struct {
	max  int64
	load Loader

	mu    sync.Mutex
	ll    *list.List // front = most recently used
	items map[BlobKey]*list.Element
	size  int64

	sf           singleflight.Group
	lookups      *prometheus.CounterVec
	hits, misses prometheus.Counter
	bytes        prometheus.Gauge
}

type blobItem struct {
	key  BlobKey
	blob *Blob
}

// NewBlobs returns a cache holding at most maxBytes of data, read by load.
func NewBlobs(maxBytes int64, load Loader, reg prometheus.Registerer) *Blobs {
	b := &Blobs{
		max:   maxBytes,
		load:  load,
		ll:    list.New(),
		items: map[BlobKey]*list.Element{},
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_index_cache_lookups_total",
			Help: "Index lookups in the in-memory cache by result (hit, miss).",
		}, []string{"result"}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "uplink_index_cache_bytes",
			Help: "Bytes of index data held in memory.",
		}),
	}
	b.hits, b.misses = b.lookups.WithLabelValues("hit"), b.lookups.WithLabelValues("miss")
	if reg != nil {
		reg.MustRegister(b.lookups, b.bytes)
	}
	return b
}

// Get returns the blob under key, loading it once however many callers
// ask at the same time. The load runs detached from any one caller's
// context, so a caller that gives up does not fail the others.
func (b *Blobs) Get(ctx context.Context, key BlobKey) (*Blob, error) {
	if blob := b.lookup(key); blob != nil {
		b.hits.Inc()
		return blob, nil
	}
	b.misses.Inc()
	ch := b.sf.DoChan(key.String(), func() (any, error) {
		if blob := b.lookup(key); blob != nil {
			return blob, nil
		}
		blob, err := b.load(context.WithoutCancel(ctx), key)
		if err != nil {
			return nil, err
		}
		b.add(key, blob)
		return blob, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Blob), nil
	}
}

func (b *Blobs) lookup(key BlobKey) *Blob {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el, ok := b.items[key]; ok {
		b.ll.MoveToFront(el)
		return el.Value.(*blobItem).blob
	}
	return nil
}

func (b *Blobs) add(key BlobKey, blob *Blob) {
	n := int64(len(blob.Data))
	if n > b.max {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.items[key]; ok {
		return
	}
	b.items[key] = b.ll.PushFront(&blobItem{key, blob})
	b.size += n
	for b.size > b.max {
		el := b.ll.Back()
		it := el.Value.(*blobItem)
		b.ll.Remove(el)
		delete(b.items, it.key)
		b.size -= int64(len(it.blob.Data))
	}
	b.bytes.Set(float64(b.size))
}
