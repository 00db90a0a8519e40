package operation_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/instance/operation"
)

func TestWakeupCoalesces(t *testing.T) {
	var none *operation.Wakeup
	none.Signal() // no engine: nothing to wake, no panic
	if none.C() != nil {
		t.Fatal("a nil Wakeup delivers")
	}
	w := operation.NewWakeup()
	w.Signal()
	w.Signal() // never blocks
	<-w.C()
	select {
	case <-w.C():
		t.Fatal("two signals before a look delivered twice")
	default:
	}
}

// TestWakeupRunsNow: an operation queued after the engine's scan runs
// when the journal signals the shared Wakeup, not at the next scan.
func TestWakeupRunsNow(t *testing.T) {
	j := newJournal()
	w := operation.NewWakeup()
	open := make(chan struct{})
	close(open)
	b := &gateBackend{steps: []string{"one"}, ran: map[string]int{}, gate: open}
	e := operation.NewEngine(j, b, operation.EngineConfig{
		Scan: time.Hour, Wakeup: w, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)
	time.Sleep(50 * time.Millisecond) // the first scan found nothing
	j.mu.Lock()
	j.ops["late"] = &operation.Operation{ID: "late", Kind: operation.KindUpgrade, State: operation.Queued}
	j.mu.Unlock()
	w.Signal()
	waitFor(t, "late to finish", func() bool { return j.get("late").State.Done() })
}
