package operation_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/instance/operation"
)

// memJournal keeps operations in memory: the real journal (storage) is
// tested through the server; this one lets a test play the other replica.
type memJournal struct {
	mu  sync.Mutex
	ops map[string]*operation.Operation
}

func (j *memJournal) Update(_ context.Context, id string, fn func(*operation.Operation) error) (*operation.Operation, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	cur, ok := j.ops[id]
	if !ok {
		return nil, errors.New("no such operation")
	}
	cp := clone(cur)
	if err := fn(cp); err != nil {
		return nil, err
	}
	j.ops[id] = cp
	return clone(cp), nil
}

func (j *memJournal) Unfinished(context.Context) ([]string, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var ids []string
	for id, op := range j.ops {
		if !op.State.Done() {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func (j *memJournal) Target(context.Context, *operation.Operation) (operation.Target, error) {
	return operation.Target{}, nil
}

func (j *memJournal) get(id string) *operation.Operation {
	j.mu.Lock()
	defer j.mu.Unlock()
	return clone(j.ops[id])
}

func clone(op *operation.Operation) *operation.Operation {
	b, _ := json.Marshal(op)
	var c operation.Operation
	json.Unmarshal(b, &c)
	return &c
}

// gateBackend blocks each step until released, counting runs.
type gateBackend struct {
	mu    sync.Mutex
	ran   map[string]int
	gate  chan struct{}
	fail  string
	steps []string
}

func (b *gateBackend) Steps(*operation.Operation, operation.Target) []string { return b.steps }

func (b *gateBackend) Do(ctx context.Context, step string, _ *operation.Operation, _ operation.Target, log func(string)) error {
	b.mu.Lock()
	b.ran[step]++
	b.mu.Unlock()
	log("running " + step)
	select {
	case <-b.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	if step == b.fail {
		return errors.New("boom")
	}
	return nil
}

func newJournal(ids ...string) *memJournal {
	j := &memJournal{ops: map[string]*operation.Operation{}}
	for _, id := range ids {
		j.ops[id] = &operation.Operation{ID: id, Kind: operation.KindUpgrade, State: operation.Queued}
	}
	return j
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunsStepsAndRecordsFailure(t *testing.T) {
	j := newJournal("web.1")
	b := &gateBackend{ran: map[string]int{}, gate: make(chan struct{}), steps: []string{"one", "two", "three"}, fail: "two"}
	close(b.gate)
	e := operation.NewEngine(j, b, operation.EngineConfig{Lease: time.Second, Scan: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go e.Run(ctx)
	waitFor(t, "operation ends", func() bool { return j.get("web.1").State.Done() })
	op := j.get("web.1")
	if op.State != operation.Failed || op.Error != "two: boom" || op.Steps[0].State != operation.StepDone ||
		op.Steps[1].State != operation.StepFailed || op.Steps[2].State != operation.StepPending || op.FinishedAt == nil {
		t.Fatalf("%+v", op)
	}
	if b.ran["three"] != 0 {
		t.Fatal("a step after a failure ran")
	}
}

// A replica whose lease was taken over stops writing (the fencing token
// no longer matches) and stops working.
func TestFencedAfterTakeover(t *testing.T) {
	j := newJournal("web.1")
	b := &gateBackend{ran: map[string]int{}, gate: make(chan struct{}), steps: []string{"one", "two"}}
	e := operation.NewEngine(j, b, operation.EngineConfig{Lease: 300 * time.Millisecond, Scan: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go e.Run(ctx)
	waitFor(t, "step one starts", func() bool { s := j.get("web.1").Steps; return len(s) > 0 && s[0].State == operation.StepRunning })

	// Another replica takes over: a new holder and a higher token.
	j.Update(t.Context(), "web.1", func(op *operation.Operation) error {
		op.Lease = &operation.Lease{Holder: "other", Token: op.Lease.Token + 1, Expires: time.Now().Add(time.Hour)}
		return nil
	})
	close(b.gate) // step one would now finish
	time.Sleep(500 * time.Millisecond)
	op := j.get("web.1")
	if op.Lease.Holder != "other" || op.Steps[0].State != operation.StepRunning || op.State.Done() {
		t.Fatalf("the fenced replica wrote: %+v", op)
	}
	if b.ran["two"] != 0 {
		t.Fatal("the fenced replica went on to the next step")
	}
}

// An operation whose holder stops renewing is taken over and resumed from
// its first unfinished step; past MaxAttempts it fails.
func TestTakeoverResumesAndGivesUp(t *testing.T) {
	j := newJournal("web.1", "web.2")
	for _, id := range []string{"web.1", "web.2"} {
		j.Update(t.Context(), id, func(op *operation.Operation) error {
			op.State, op.Attempts = operation.Running, 1
			op.Lease = &operation.Lease{Holder: "dead", Token: 7, Expires: time.Now().Add(-time.Second)}
			op.Steps = []operation.Step{{Name: "one", State: operation.StepDone}, {Name: "two", State: operation.StepRunning}}
			if id == "web.2" {
				op.Attempts = 3
			}
			return nil
		})
	}
	b := &gateBackend{ran: map[string]int{}, gate: make(chan struct{}), steps: []string{"one", "two"}}
	close(b.gate)
	e := operation.NewEngine(j, b, operation.EngineConfig{Lease: time.Second, Scan: 10 * time.Millisecond, MaxAttempts: 3})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go e.Run(ctx)
	waitFor(t, "both end", func() bool { return j.get("web.1").State.Done() && j.get("web.2").State.Done() })
	if op := j.get("web.1"); op.State != operation.Succeeded || op.Lease.Token != 8 || op.Attempts != 2 || b.ran["one"] != 0 || b.ran["two"] != 1 {
		t.Fatalf("resumed: %+v, ran %v", op, b.ran)
	}
	if op := j.get("web.2"); op.State != operation.Failed || op.Error == "" {
		t.Fatalf("past MaxAttempts: %+v", op)
	}
}
