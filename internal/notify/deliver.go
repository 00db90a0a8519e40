package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/uplinkhq/uplink/storage"
)

// Retry bounds the retries of one event.
type Retry struct {
	// Initial is the first wait after a failure (1s when 0); each next
	// one is twice as long, ±50% jitter, at most Max (5m when 0).
	Initial time.Duration
	Max     time.Duration
	// GiveUp drops an event still undelivered this long after it was
	// queued (24h when 0).
	GiveUp time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Initial <= 0 {
		r.Initial = time.Second
	}
	if r.Max <= 0 {
		r.Max = 5 * time.Minute
	}
	if r.GiveUp <= 0 {
		r.GiveUp = 24 * time.Hour
	}
	return r
}

// waits returns the successive waits between tries of one event: the
// library's exponential backoff with jitter, capped at Max (the library
// caps the interval before jitter, this caps the wait itself).
func (r Retry) waits() func() time.Duration {
	b := &backoff.ExponentialBackOff{InitialInterval: r.Initial, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: r.Max}
	b.Reset()
	return func() time.Duration { return min(b.NextBackOff(), r.Max) }
}

// deliverer sends one endpoint's queue, in order.
type deliverer struct {
	n      *Notifier
	url    string
	shown  string
	prefix string
	wake   chan struct{}
	// queued is the queue's length as last listed, plus and minus what
	// this replica added and removed since.
	queued atomic.Int64

	failures int       // since the last warning
	warned   time.Time // when the last warning was logged
}

// warnEvery rate-limits the warning about a failing receiver.
const warnEvery = time.Minute

func (t *deliverer) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// run delivers whenever an event is queued here, and at every scan,
// where it also takes over what silent replicas left.
func (t *deliverer) run(ctx context.Context) {
	tick := time.NewTicker(max(t.n.cfg.Grace/2, 100*time.Millisecond))
	defer tick.Stop()
	for {
		t.drain(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-t.wake:
		}
	}
}

// drain delivers, a page at a time, every event this replica owns or
// may claim, until a page makes no progress.
func (t *deliverer) drain(ctx context.Context) {
	for ctx.Err() == nil {
		infos, err := t.n.d.List(ctx, t.prefix)
		if err != nil {
			if ctx.Err() == nil {
				t.n.log.Warn("notify: listing the queue failed", "endpoint", t.shown, "err", err)
			}
			return
		}
		t.queued.Store(int64(len(infos)))
		live := &liveness{d: t.n.d, grace: t.n.cfg.Grace, seen: map[string]bool{}}
		progress, tried := false, 0
		for _, info := range infos {
			if tried == pageSize || ctx.Err() != nil {
				break
			}
			at, owner, ok := parseKey(info.Key)
			if !ok || owner != t.n.id && (time.Since(at) < t.n.cfg.Grace || live.alive(ctx, owner)) {
				continue // another replica's, alive: it delivers it
			}
			switch t.deliver(ctx, info.Key, live) {
			case gone:
				progress = true
				tried++
			case stuck:
				tried++
			}
		}
		if !progress {
			return
		}
	}
}

// What deliver did with an event.
type outcome int

const (
	gone    outcome = iota // it left the queue: delivered or dropped (here or elsewhere)
	stuck                  // it stays: storage failed, or this replica is stopping
	another                // another live replica owns it
)

// deliver sends one event until an answer is 2xx, it is too old to keep
// trying, or it is no longer this replica's.
func (t *deliverer) deliver(ctx context.Context, key string, live *liveness) outcome {
	wait := t.n.cfg.Retry.waits()
	for {
		var e entry
		etag, err := storage.ReadJSON(ctx, t.n.d, key, &e)
		switch {
		case storage.IsNotFound(err):
			return gone // delivered, or dropped, by another replica
		case err != nil:
			if ctx.Err() == nil {
				t.n.log.Warn("notify: reading a queued event failed", "key", key, "err", err)
			}
			return stuck
		}
		if e.Owner != t.n.id {
			if time.Since(e.QueuedAt) < t.n.cfg.Grace || live.alive(ctx, e.Owner) || !t.claim(ctx, key, e, etag) {
				return another
			}
		}
		if age := time.Since(e.QueuedAt); age > t.n.cfg.Retry.GiveUp {
			t.n.m.deliveries.WithLabelValues("dropped").Inc()
			t.n.log.Error("notify: event dropped, undelivered after retrying", "endpoint", t.shown, "type", e.Type, "id", e.ID, "age", age.Round(time.Second))
			return t.remove(ctx, key)
		}
		err = t.post(ctx, e)
		if err == nil {
			t.n.m.deliveries.WithLabelValues("delivered").Inc()
			t.recovered()
			return t.remove(ctx, key)
		}
		if ctx.Err() != nil {
			return stuck
		}
		t.n.m.deliveries.WithLabelValues("failed").Inc()
		t.failed(err)
		select {
		case <-ctx.Done():
			return stuck
		case <-time.After(wait()):
		}
	}
}

// claim makes this replica the owner of a silent one's event; only one
// claimer wins (a conditional write on the version read).
func (t *deliverer) claim(ctx context.Context, key string, e entry, etag string) bool {
	prev := e.Owner
	e.Owner = t.n.id
	err := storage.WriteJSON(ctx, t.n.d, key, e, storage.Condition{IfMatch: etag})
	if err != nil {
		if !errors.Is(err, storage.ErrConditionFailed) && ctx.Err() == nil {
			t.n.log.Warn("notify: could not take over a queued event", "key", key, "err", err)
		}
		return false
	}
	t.n.log.Info("notify: took over an event of a silent replica", "endpoint", t.shown, "id", e.ID, "from", prev)
	return true
}

func (t *deliverer) remove(ctx context.Context, key string) outcome {
	if err := t.n.d.Delete(ctx, key); err != nil {
		// Delivered again later: at least once allows it.
		t.n.log.Warn("notify: could not remove a delivered event", "key", key, "err", err)
		return stuck
	}
	t.queued.Add(-1)
	return gone
}

// post sends e once.
func (t *deliverer) post(ctx context.Context, e entry) error {
	ctx, cancel := context.WithTimeout(ctx, t.n.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(e.Event))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", t.n.cfg.UserAgent)
	req.Header.Set("X-Uplink-Event", e.Type)
	req.Header.Set("X-Uplink-Delivery", e.ID)
	if t.n.cfg.Secret != "" {
		req.Header.Set(SignatureHeader, Sign([]byte(t.n.cfg.Secret), e.Event))
	}
	resp, err := t.n.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// failed logs a failing receiver at most once per warnEvery.
func (t *deliverer) failed(err error) {
	t.failures++
	if time.Since(t.warned) < warnEvery {
		return
	}
	t.n.log.Warn("notify: receiver failing; retrying with backoff", "endpoint", t.shown, "err", err, "failures", t.failures)
	t.warned, t.failures = time.Now(), 0
}

func (t *deliverer) recovered() {
	if !t.warned.IsZero() {
		t.n.log.Info("notify: receiver answers again", "endpoint", t.shown)
		t.warned, t.failures = time.Time{}, 0
	}
}
