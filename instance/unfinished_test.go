package instance_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/storage"
)

// countingDriver counts reads of installation records.
type countingDriver struct {
	storage.Driver
	reads atomic.Int64
}

func (d *countingDriver) Open(ctx context.Context, key string) (storage.Object, error) {
	if strings.HasPrefix(key, "meta/installations/") {
		d.reads.Add(1)
	}
	return d.Driver.Open(ctx, key)
}

// bare makes e.svc a Service with no engine: operations stay as the test
// leaves them. It reads storage through the returned counter.
func (e *env) bare(obs instance.Observer) *countingDriver {
	d := &countingDriver{Driver: e.drv}
	refs := ref.NewStore(d)
	e.svc = instance.New(instance.Config{Storage: d, Refs: refs, Resolver: refs, DistributionURL: "http://uplink.test:4080", Observer: obs})
	return d
}

func (e *env) putNamed(name string, spec instance.Spec) *operation.Operation {
	e.t.Helper()
	_, op, _, err := e.svc.Put(context.Background(), name, spec)
	if err != nil {
		e.t.Fatalf("Put %s: %v", name, err)
	}
	return op
}

// finish ends operation id as the engine would.
func (e *env) finish(id string, state operation.State) *operation.Operation {
	e.t.Helper()
	op, err := e.svc.Update(context.Background(), id, func(op *operation.Operation) error {
		now := time.Now().UTC()
		op.State, op.FinishedAt = state, &now
		return nil
	})
	if err != nil {
		e.t.Fatalf("finishing %s: %v", id, err)
	}
	return op
}

func (e *env) unfinished() []string {
	e.t.Helper()
	ids, err := e.svc.Unfinished(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return ids
}

func (e *env) markers() []string {
	e.t.Helper()
	infos, err := e.drv.List(context.Background(), "meta/unfinished/")
	if err != nil {
		e.t.Fatal(err)
	}
	var keys []string
	for _, i := range infos {
		keys = append(keys, strings.TrimPrefix(i.Key, "meta/unfinished/"))
	}
	return keys
}

func TestUnfinishedReadsOnlyUnfinished(t *testing.T) {
	e := newEnv(t)
	d := e.bare(nil)
	e.publish("A", "main", "1.0-r0")
	var ids []string
	for _, name := range []string{"a", "b", "c", "d"} {
		ids = append(ids, e.putNamed(name, e.spec(mainBranch)).ID)
	}
	if got := e.markers(); strings.Join(got, " ") != "a/000000000001 b/000000000001 c/000000000001 d/000000000001" {
		t.Fatalf("markers after queueing: %v", got)
	}
	if got := e.unfinished(); strings.Join(got, " ") != strings.Join(ids, " ") {
		t.Fatalf("first (full) scan: %v, want %v", got, ids)
	}
	for _, id := range ids[:3] {
		e.finish(id, operation.Succeeded)
	}
	if got := e.markers(); strings.Join(got, " ") != "d/000000000001" {
		t.Fatalf("markers after three finished: %v", got)
	}
	before := d.reads.Load()
	if got := e.unfinished(); len(got) != 1 || got[0] != "d.1" {
		t.Fatalf("indexed scan: %v, want [d.1]", got)
	}
	if n := d.reads.Load() - before; n != 1 {
		t.Fatalf("indexed scan read %d records, want 1", n)
	}
}

// TestUnfinishedMarkersHealed: a marker left by a crash after its
// operation finished goes at the next scan; a record that an uplink
// without the index wrote is indexed by the first scan of a new replica;
// a marker whose operation is not in its record yet stays.
func TestUnfinishedMarkersHealed(t *testing.T) {
	e := newEnv(t)
	e.bare(nil)
	ctx := context.Background()
	e.publish("A", "main", "1.0-r0")
	done := e.putNamed("done", e.spec(mainBranch)).ID
	e.finish(done, operation.Succeeded)
	old := e.putNamed("old", e.spec(mainBranch)).ID

	put := func(key string) {
		if err := storage.WriteJSON(ctx, e.drv, "meta/unfinished/"+key, "x", storage.Condition{}); err != nil {
			t.Fatal(err)
		}
	}
	put("done/000000000001") // crashed between finishing and unmarking
	put("done/000000000002") // queued, its record not written yet
	if err := e.drv.Delete(ctx, "meta/unfinished/old/000000000001"); err != nil {
		t.Fatal(err)
	}

	e.bare(nil) // a new replica: its first scan reads every record
	if got := e.unfinished(); len(got) != 1 || got[0] != old {
		t.Fatalf("full scan: %v, want [%s]", got, old)
	}
	if got := e.unfinished(); len(got) != 1 || got[0] != old {
		t.Fatalf("indexed scan: %v, want [%s]", got, old)
	}
	if got := strings.Join(e.markers(), " "); got != "done/000000000002 old/000000000001" {
		t.Fatalf("markers: %s", got)
	}
}

// TestEngineRunsIndexedOperations: an engine on a replica whose scan
// uses the index runs an operation queued after its first scan, and the
// operation's marker is gone once it finished.
func TestEngineRunsIndexedOperations(t *testing.T) {
	e := newEnv(t)
	e.start(&backend{}, 0)
	e.publish("A", "main", "1.0-r0")
	time.Sleep(100 * time.Millisecond) // the first scan has run
	_, op, _ := e.put(mainBranch)
	if op = e.wait(op.ID); op.State != operation.Succeeded {
		t.Fatalf("%s: %s %s", op.ID, op.State, op.Error)
	}
	if got := e.markers(); len(got) != 0 {
		t.Fatalf("markers left: %v", got)
	}
}
