package instance_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/storage"
)

// failingDeletes refuses to delete archived operations while failing is set.
type failingDeletes struct {
	storage.Driver
	failing atomic.Bool
}

func (d *failingDeletes) Delete(ctx context.Context, key string) error {
	if d.failing.Load() && strings.HasPrefix(key, "meta/operations/") {
		return errors.New("storage unavailable")
	}
	return d.Driver.Delete(ctx, key)
}

// limited makes e.svc a Service with no engine that keeps keep history
// entries and archived operations, over storage whose deletes of
// archives fail on demand.
func (e *env) limited(keep int) *failingDeletes {
	d := &failingDeletes{Driver: e.drv}
	refs := ref.NewStore(d)
	e.svc = instance.New(instance.Config{Storage: d, Refs: refs, Resolver: refs, DistributionURL: "http://uplink.test:4080",
		KeepHistory: keep, Logger: slog.New(slog.DiscardHandler)})
	return d
}

// changes makes channel changes from through to of web (change 1 creates it), each
// finished before the next.
func (e *env) changes(from, to int, a string) {
	e.t.Helper()
	for i := from; i <= to; i++ {
		ch := mainBranch
		if i%2 == 0 {
			ch = instance.Channel{Commit: a}
		}
		var op *operation.Operation
		if i == 1 {
			_, op, _ = e.put(ch)
		} else {
			op = e.setChannel(ch)
		}
		e.finish(op.ID, operation.Succeeded)
	}
}

// archived lists the sequence numbers of web's archived operations,
// oldest first.
func (e *env) archived() []int {
	e.t.Helper()
	infos, err := e.drv.List(context.Background(), "meta/operations/web/")
	if err != nil {
		e.t.Fatal(err)
	}
	seqs := make([]int, len(infos))
	for i, info := range infos {
		seqs[i], _ = strconv.Atoi(path.Base(info.Key))
	}
	return seqs
}

// TestHistoryLimit: past --keep-history channel changes, the history
// shows exactly the newest N, the archive holds the newest N operations
// beyond those in the record, and the operations list shows what is
// kept, newest first; an operation trimmed away is not found.
func TestHistoryLimit(t *testing.T) {
	const keep, n = 10, 45
	e := newEnv(t)
	e.limited(keep)
	a := e.publish("A", "main", "1.0-r0")
	e.changes(1, n, a)

	h := e.history()
	if len(h) != keep {
		t.Fatalf("history holds %d entries, want %d", len(h), keep)
	}
	for i, entry := range h {
		if want := fmt.Sprintf("web.%d", n-i); entry.Operation != want || entry.Result != operation.Succeeded {
			t.Fatalf("history entry %d is %s (%s), want %s succeeded", i, entry.Operation, entry.Result, want)
		}
	}

	// The record keeps KeepOperations and the newest; the archive the
	// keep before those.
	newestArchived := n - instance.KeepOperations - 1
	var want []int
	for seq := newestArchived - keep + 1; seq <= newestArchived; seq++ {
		want = append(want, seq)
	}
	if got := e.archived(); !slices.Equal(got, want) {
		t.Fatalf("archive holds %v, want %v", got, want)
	}

	ops := e.ops()
	if len(ops) != instance.KeepOperations+1+keep {
		t.Fatalf("%d operations listed, want %d", len(ops), instance.KeepOperations+1+keep)
	}
	for i, op := range ops {
		if want := fmt.Sprintf("web.%d", n-i); op.ID != want || op.State != operation.Succeeded {
			t.Fatalf("operation %d is %s %s, want %s succeeded (newest first)", i, op.ID, op.State, want)
		}
	}
	ctx := context.Background()
	oldest := fmt.Sprintf("web.%d", newestArchived-keep+1)
	if op, err := e.svc.Operation(ctx, oldest); err != nil || op.ID != oldest {
		t.Fatalf("oldest kept operation %s: %+v %v", oldest, op, err)
	}
	gone := fmt.Sprintf("web.%d", newestArchived-keep)
	if _, err := e.svc.Operation(ctx, gone); !errors.Is(err, instance.ErrNotFound) {
		t.Fatalf("operation %s, past the limit: %v, want not found", gone, err)
	}
}

// TestHistoryLimitDeleteFails: an archive that cannot be trimmed fails
// no operation; the next archive, once storage deletes again, trims it.
func TestHistoryLimitDeleteFails(t *testing.T) {
	const keep, n = 10, 40
	e := newEnv(t)
	d := e.limited(keep)
	a := e.publish("A", "main", "1.0-r0")
	e.changes(1, n-5, a)

	d.failing.Store(true)
	e.changes(n-4, n, a)
	if got := len(e.archived()); got != keep+5 {
		t.Fatalf("with deletes failing the archive holds %d operations, want %d", got, keep+5)
	}
	for _, op := range e.ops()[:5] {
		if op.State != operation.Succeeded {
			t.Fatalf("operation %s %s while trimming failed, want succeeded", op.ID, op.State)
		}
	}

	d.failing.Store(false)
	e.changes(n+1, n+1, a)
	got := e.archived()
	if len(got) != keep || got[len(got)-1] != n+1-instance.KeepOperations-1 {
		t.Fatalf("after deletes work again the archive holds %v, want the newest %d", got, keep)
	}
}
