package retention

import (
	"context"
	"time"

	"github.com/uplinkhq/uplink/storage"
)

// DefaultInterval is how often every app is pruned (uplink serve
// --prune-interval).
const DefaultInterval = time.Hour

// leaseKey is the one object that keeps periodic prunes to one replica at
// a time, and to one per Interval across replicas.
const leaseKey = "meta/leases/retention"

type lease struct {
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
	LastRun time.Time `json:"last_run"`
}

// Run prunes every app each Interval, on whichever replica takes the
// lease first, until ctx ends. A zero Interval returns at once.
func (p *Pruner) Run(ctx context.Context) {
	if p.Interval <= 0 {
		return
	}
	// Replicas look more often than they run: one that took over from a
	// replica gone down keeps the pace.
	t := time.NewTicker(max(p.Interval/4, time.Second))
	defer t.Stop()
	for {
		if p.acquire(ctx) {
			p.PruneAll(ctx)
			p.release(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// acquire takes the lease when no live replica holds it and the last run
// is an Interval old. The lease outlives a run by far: a replica that
// dies mid-run holds the others back that long, not forever.
func (p *Pruner) acquire(ctx context.Context) bool {
	now := p.now()
	took := false
	err := storage.UpdateJSON(ctx, p.Storage, leaseKey, func(cur *lease, exists bool) (bool, error) {
		took = false
		if exists && (now.Before(cur.Expires) || now.Sub(cur.LastRun) < p.Interval) {
			return false, nil
		}
		*cur = lease{Holder: p.Holder, Expires: now.Add(max(p.Interval, time.Hour)), LastRun: now}
		took = true
		return true, nil
	})
	if err != nil {
		if ctx.Err() == nil {
			p.log().Error("retention: taking the prune lease", "err", err)
		}
		return false
	}
	return took
}

// release lets the next run start an Interval after this one started.
func (p *Pruner) release(ctx context.Context) {
	err := storage.UpdateJSON(context.WithoutCancel(ctx), p.Storage, leaseKey, func(cur *lease, exists bool) (bool, error) {
		if !exists || cur.Holder != p.Holder {
			return false, nil
		}
		cur.Expires = time.Time{}
		return true, nil
	})
	if err != nil {
		p.log().Error("retention: releasing the prune lease", "err", err)
	}
}

// PruneAll prunes every app that has builds; failures are logged, and the
// next run tries again.
func (p *Pruner) PruneAll(ctx context.Context) {
	apps, err := p.Refs.Apps(ctx)
	if err != nil {
		p.log().Error("retention: listing apps", "err", err)
		p.ran(err)
		return
	}
	for _, app := range apps {
		if ctx.Err() != nil {
			return
		}
		rep, err := p.Prune(ctx, app, false)
		if err != nil {
			p.log().Error("retention: pruning", "app", app.String(), "err", err)
			continue
		}
		if len(rep.Deleted) > 0 {
			p.log().Info("retention: pruned", "app", app.String(), "deleted", len(rep.Deleted), "bytes", rep.Bytes, "kept", rep.Kept)
		}
	}
}
