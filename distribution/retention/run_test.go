package retention

import (
	"context"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/storage/filesystem"
)

// TestLeaseOneReplicaPerInterval: of two replicas on one storage, one
// runs; the other waits for the interval since that run's start, not
// only for its end; a holder that died is taken over once its lease ends.
func TestLeaseOneReplicaPerInterval(t *testing.T) {
	d, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a := &Pruner{Storage: d, Interval: time.Hour, Holder: "a", Now: clock}
	b := &Pruner{Storage: d, Interval: time.Hour, Holder: "b", Now: clock}
	if !a.acquire(ctx) || b.acquire(ctx) {
		t.Fatal("want a to take the lease and b to be refused")
	}
	a.release(ctx)
	now = now.Add(30 * time.Minute)
	if b.acquire(ctx) || a.acquire(ctx) {
		t.Fatal("a run within the interval of the last one")
	}
	now = now.Add(31 * time.Minute)
	if !b.acquire(ctx) {
		t.Fatal("b not let in an interval after the last run")
	}
	// b dies holding the lease: a waits until it expires.
	now = now.Add(59 * time.Minute)
	if a.acquire(ctx) {
		t.Fatal("a took a live lease")
	}
	now = now.Add(2 * time.Minute)
	if !a.acquire(ctx) {
		t.Fatal("a did not take over the lease of a dead holder")
	}
}
