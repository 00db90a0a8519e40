package distribution

import (
	"sync/atomic"
	"time"
)

// RedisBreaker keeps a cache off Redis for a second after a Redis call
// failed, so that an outage costs one timeout per second rather than one
// per request. The zero value lets Redis be used.
type RedisBreaker struct{ downUntil atomic.Int64 }

// Usable reports whether Redis may be called now.
func (b *RedisBreaker) Usable() bool { return time.Now().UnixNano() >= b.downUntil.Load() }

// Failed keeps Redis off for a second. It reports whether this failure
// starts an outage (Redis was usable until now), to log it once.
func (b *RedisBreaker) Failed() bool {
	now := time.Now()
	return b.downUntil.Swap(now.Add(time.Second).UnixNano()) < now.UnixNano()
}

// Answered lets Redis be used again at once.
func (b *RedisBreaker) Answered() { b.downUntil.Store(0) }
