package instance_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/storage"
)

// TestDeleteLifecycle: deleting starts one delete operation (asking again
// returns it); once it succeeds the installation is gone from views and
// access, its operations stay readable, and a Put makes it anew.
func TestDeleteLifecycle(t *testing.T) {
	e := newEnv(t)
	e.bare(nil)
	ctx := context.Background()
	e.publish("A", "main", "1.0-r0")
	_, op, _ := e.put(mainBranch)
	e.finish(op.ID, operation.Succeeded)
	if names, err := e.svc.Names(ctx); err != nil || names["web"] != "default" {
		t.Fatalf("Names: %v %v", names, err)
	}
	if p, err := e.svc.Projects(ctx, testApp); err != nil || !slices.Equal(p, []string{"default"}) {
		t.Fatalf("Projects: %v %v", p, err)
	}

	del, err := e.svc.Delete(ctx, "web")
	if err != nil || del.Kind != operation.KindDelete || del.From == nil || del.From.Branch != "main" {
		t.Fatalf("Delete: %+v %v", del, err)
	}
	if again, err := e.svc.Delete(ctx, "web"); err != nil || again.ID != del.ID {
		t.Fatalf("Delete while deleting: %+v %v, want %s", again, err, del.ID)
	}
	var busy *instance.BusyError
	if _, err := e.svc.SetChannel(ctx, "web", mainBranch); !errors.As(err, &busy) || busy.Running != del.ID {
		t.Fatalf("SetChannel while deleting: %v", err)
	}
	e.finish(del.ID, operation.Succeeded)

	if _, err := e.svc.Get(ctx, "web"); !errors.Is(err, instance.ErrNotFound) {
		t.Fatalf("Get after delete: %v", err)
	}
	if _, err := e.svc.History(ctx, "web"); !errors.Is(err, instance.ErrNotFound) {
		t.Fatalf("History after delete: %v", err)
	}
	if _, err := e.svc.Delete(ctx, "web"); !errors.Is(err, instance.ErrNotFound) {
		t.Fatalf("Delete after delete: %v", err)
	}
	if names, _ := e.svc.Names(ctx); len(names) != 0 {
		t.Fatalf("Names after delete: %v", names)
	}
	if p, _ := e.svc.Projects(ctx, testApp); len(p) != 0 {
		t.Fatalf("Projects after delete: %v", p)
	}
	if ops := e.ops(); len(ops) != 2 || ops[0].ID != del.ID || ops[0].State != operation.Succeeded {
		t.Fatalf("operations after delete: %+v", ops)
	}
	if views, err := e.svc.List(ctx); err != nil || len(views) != 0 {
		t.Fatalf("List after delete: %+v %v", views, err)
	}

	v, op, created := e.put(mainBranch)
	if !created || op == nil || op.ID != "web.3" || len(e.history()) != 1 || v.LastAttempt != nil {
		t.Fatalf("Put after delete: created %v op %+v history %+v", created, op, e.history())
	}
}

// failMarks fails writes of unfinished-operation markers.
type failMarks struct{ storage.Driver }

func (d failMarks) Put(ctx context.Context, key string, r io.Reader, size int64, c storage.Condition) (storage.Info, error) {
	if strings.HasPrefix(key, "meta/unfinished/") {
		return storage.Info{}, errors.New("storage is down")
	}
	return d.Driver.Put(ctx, key, r, size, c)
}

// TestNoOperationWithoutMarker: when its marker cannot be written, no
// operation is queued and the caller hears so: the engine, which finds
// work through the markers, never misses an acknowledged operation.
func TestNoOperationWithoutMarker(t *testing.T) {
	e := newEnv(t)
	e.bare(nil)
	ctx := context.Background()
	e.publish("A", "main", "1.0-r0")
	refs := ref.NewStore(e.drv)
	e.svc = instance.New(instance.Config{Storage: failMarks{e.drv}, Refs: refs, Resolver: refs, DistributionURL: "http://uplink.test:4080"})
	if _, _, _, err := e.svc.Put(ctx, "web", e.spec(mainBranch)); err == nil {
		t.Fatal("Put queued an operation without its marker")
	}
	if _, err := e.svc.Get(ctx, "web"); !errors.Is(err, instance.ErrNotFound) {
		t.Fatalf("the installation was written: %v", err)
	}
}
