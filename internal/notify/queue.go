package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/uplinkhq/uplink/storage"
)

// The queue in storage, one object per event and endpoint:
//
//	meta/notify/queue/<endpoint>/<stamp>-<replica>  an entry (key order = raise order)
//	meta/notify/replicas/<replica>                  a replica's heartbeat
//
// <endpoint> is a hash of the URL (URLs may hold credentials), <stamp> the
// UTC time the event was queued, <replica> the id of the process that
// queued it, which delivers it unless another claimed it.
const (
	queuePrefix   = "meta/notify/queue/"
	replicaPrefix = "meta/notify/replicas/"
	stampLayout   = "20060102T150405.000000000Z"
)

// entry is one queued event.
type entry struct {
	// Owner is the replica that delivers it: the one that queued it, or
	// the one that claimed it after that one went silent.
	Owner    string          `json:"owner"`
	QueuedAt time.Time       `json:"queued_at"`
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Event    json.RawMessage `json:"event"`
}

// endpointKey is the queue prefix of url.
func endpointKey(url string) string {
	h := sha256.Sum256([]byte(url))
	return queuePrefix + hex.EncodeToString(h[:8]) + "/"
}

func replicaKey(id string) string { return replicaPrefix + id }

// parseKey splits an entry key into when it was queued and by whom.
func parseKey(key string) (time.Time, string, bool) {
	name := key[strings.LastIndexByte(key, '/')+1:]
	stamp, owner, ok := strings.Cut(name, "-")
	if !ok {
		return time.Time{}, "", false
	}
	at, err := time.Parse(stampLayout, stamp)
	return at, owner, err == nil
}

// clock hands out strictly increasing stamps, so that the entries one
// replica queues sort in the order it raised them.
type clock struct {
	mu   sync.Mutex
	last time.Time
}

func (c *clock) next() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now().UTC()
	if !now.After(c.last) {
		now = c.last.Add(time.Nanosecond)
	}
	c.last = now
	return now
}

// liveness answers, for one pass over a queue, whether a replica still
// beats; each replica's heartbeat is read at most once per pass.
type liveness struct {
	d     storage.Driver
	grace time.Duration
	seen  map[string]bool
}

func (l *liveness) alive(ctx context.Context, id string) bool {
	if v, ok := l.seen[id]; ok {
		return v
	}
	// The time the replica wrote, not the object's: S3 keeps that to the
	// second only.
	var hb heartbeat
	_, err := storage.ReadJSON(ctx, l.d, replicaKey(id), &hb)
	// A storage failure counts as alive: claiming on a guess would
	// deliver twice.
	v := err == nil && time.Since(hb.At) < l.grace || err != nil && !storage.IsNotFound(err)
	l.seen[id] = v
	return v
}

// heartbeat is what a replica writes while it delivers.
type heartbeat struct {
	Replica string    `json:"replica"`
	At      time.Time `json:"at"`
}
