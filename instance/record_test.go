package instance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/storage"
)

// TestHeldPublishOfAnOlderRecord: a record that the previous uplink wrote
// while an operation ran holds a publish in pending_upgrade; after the
// upgrade to this version, the operation's end still applies it.
func TestHeldPublishOfAnOlderRecord(t *testing.T) {
	e := newEnv(t)
	b := &backend{}
	e.start(b, 0)
	a := e.publish("A", "main", "1.0-r0")
	_, op, _ := e.put(mainBranch)
	if op = e.wait(op.ID); op.State != operation.Succeeded {
		t.Fatalf("bootstrap: %s %s", op.State, op.Error)
	}
	c := e.publish("C", "main", "2.0-r0")
	if up := e.settle()[0]; up.To.Resolved != c || up.State != operation.Succeeded {
		t.Fatalf("upgrade to C: %+v", up)
	}
	d := e.publish("D", "main", "3.0-r0")
	e.settle()

	// Rewrite the record as the previous version kept it: a running
	// upgrade (to A) and the publish of D held in pending_upgrade.
	ctx := context.Background()
	key := "meta/installations/web"
	obj, err := e.drv.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	err = json.NewDecoder(obj).Decode(&raw)
	obj.Close()
	if err != nil {
		t.Fatal(err)
	}
	seq := raw["seq"].(float64) + 1
	id := "web." + jsonNumber(seq)
	now := time.Now().UTC()
	raw["seq"] = seq
	raw["operations"] = append([]any{map[string]any{
		"id": id, "kind": "upgrade", "installation": "web", "state": "queued",
		"from":   map[string]any{"branch": "main", "resolved_commit": d},
		"to":     map[string]any{"branch": "main", "resolved_commit": a},
		"commit": a, "steps": []any{}, "log": []any{}, "created_at": now,
	}}, raw["operations"].([]any)...)
	delete(raw, "pending_upgrades")
	raw["pending_upgrade"] = d
	out, _ := json.Marshal(raw)
	if _, err := e.drv.Put(ctx, key, bytes.NewReader(out), int64(len(out)), storage.Condition{}); err != nil {
		t.Fatal(err)
	}
	e.start(b, 0) // another replica of the new version takes it over

	if op := e.wait(id); op.State != operation.Succeeded {
		t.Fatalf("the older record's operation: %s %s", op.State, op.Error)
	}
	ops := e.settle()
	if up := ops[0]; up.Kind != operation.KindUpgrade || up.To.Resolved != d || up.State != operation.Succeeded {
		t.Fatalf("the held publish of D was not applied: newest operation %+v", up)
	}
	var v instance.View = e.get()
	e.expectRuns(v, mainBranch, d)
}

func jsonNumber(f float64) string {
	b, _ := json.Marshal(int64(f))
	return string(b)
}
