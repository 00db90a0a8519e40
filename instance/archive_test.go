package instance_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/storage"
)

// TestArchive: finished operations beyond KeepOperations move out of the
// record to their own objects, and read back as before, by id and in the
// list, once each even when a crash left a copy in both places.
func TestArchive(t *testing.T) {
	e := newEnv(t)
	e.bare(nil)
	ctx := context.Background()
	a := e.publish("A", "main", "1.0-r0")
	const n = instance.KeepOperations + 5
	_, op, _ := e.put(mainBranch)
	e.finish(op.ID, operation.Succeeded)
	for i := 2; i <= n; i++ {
		ch := mainBranch
		if i%2 == 0 {
			ch = instance.Channel{Commit: a}
		}
		state := operation.Succeeded
		if i%3 == 0 {
			state = operation.Failed
		}
		e.finish(e.setChannel(ch).ID, state)
	}

	infos, err := e.drv.List(ctx, "meta/operations/web/")
	if err != nil {
		t.Fatal(err)
	}
	// Archiving runs before an operation is queued: the record keeps
	// KeepOperations and the newest.
	if want := n - instance.KeepOperations - 1; len(infos) != want {
		t.Fatalf("%d archived operations, want %d", len(infos), want)
	}
	first, err := e.svc.Operation(ctx, "web.1")
	if err != nil {
		t.Fatal(err)
	}
	if first.ID != "web.1" || first.Kind != operation.KindChangeChannel || first.State != operation.Succeeded || first.To.Resolved != a {
		t.Fatalf("archived web.1 reads back as %+v", first)
	}
	if third, err := e.svc.Operation(ctx, "web.3"); err != nil || third.State != operation.Failed {
		t.Fatalf("archived web.3: %+v %v", third, err)
	}

	// A crash between writing an archive and writing the record leaves
	// the operation in both.
	inRecord, err := e.svc.Operation(ctx, "web.10")
	if err != nil {
		t.Fatal(err)
	}
	if err := storage.WriteJSON(ctx, e.drv, "meta/operations/web/000000000010", inRecord, storage.Condition{}); err != nil {
		t.Fatal(err)
	}
	ops := e.ops()
	if len(ops) != n {
		t.Fatalf("%d operations listed, want %d", len(ops), n)
	}
	for i, op := range ops {
		if want := fmt.Sprintf("web.%d", n-i); op.ID != want {
			t.Fatalf("operation %d is %s, want %s (newest first)", i, op.ID, want)
		}
	}
	if _, err := e.svc.Operation(ctx, fmt.Sprintf("web.%d", n+1)); !errors.Is(err, instance.ErrNotFound) {
		t.Fatalf("an operation never queued: %v", err)
	}
	if _, err := e.svc.Operation(ctx, "nobody.1"); !errors.Is(err, instance.ErrNotFound) {
		t.Fatalf("an operation of no installation: %v", err)
	}
}
