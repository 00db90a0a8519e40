package operation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Journal keeps operations durably; instance.Service implements it.
type Journal interface {
	// Update applies fn to operation id by compare-and-swap and returns
	// what was stored. An error from fn aborts without writing.
	Update(ctx context.Context, id string, fn func(op *Operation) error) (*Operation, error)
	// Unfinished lists the ids of queued and running operations. Every
	// replica asks at every scan, so it should not read every record; it
	// must never leave out an operation whose creation was acknowledged.
	Unfinished(ctx context.Context) ([]string, error)
	// Target says what op works on.
	Target(ctx context.Context, op *Operation) (Target, error)
}

// EngineConfig tunes an Engine.
type EngineConfig struct {
	// Lease is how long a replica may go silent before another takes its
	// operation over; it renews at a third of that.
	Lease time.Duration
	// Scan is how often the engine looks for operations nobody runs.
	Scan time.Duration
	// MaxAttempts fails an operation taken over this many times.
	MaxAttempts int
	// Wakeup, signalled when the journal queues an operation, makes the
	// engine look now instead of at the next scan; nil: the engine's own.
	Wakeup     *Wakeup
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Engine runs operations; every replica runs one. An operation is run by
// whichever replica holds its lease, recorded in the operation itself.
type Engine struct {
	j      Journal
	b      Backend
	cfg    EngineConfig
	log    *slog.Logger
	holder string

	mu      sync.Mutex
	running map[string]bool
	wg      sync.WaitGroup
	wake    *Wakeup

	total   *prometheus.CounterVec
	current prometheus.Gauge
}

var (
	errNothingToDo = errors.New("nothing to do")
	errLostLease   = errors.New("lease lost to another replica")
)

// Defaults of EngineConfig (and of uplink serve's flags).
const (
	DefaultLease = 15 * time.Second
	DefaultScan  = 5 * time.Second
)

// NewEngine returns an engine running ops of j with b.
func NewEngine(j Journal, b Backend, cfg EngineConfig) *Engine {
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Scan <= 0 {
		cfg.Scan = DefaultScan
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Wakeup == nil {
		cfg.Wakeup = NewWakeup()
	}
	host, _ := os.Hostname()
	var r [4]byte
	rand.Read(r[:])
	e := &Engine{
		j: j, b: b, cfg: cfg, log: cfg.Logger,
		holder:  fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(r[:])),
		running: map[string]bool{},
		wake:    cfg.Wakeup,
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_operations_total",
			Help: "Operations finished, by kind and result.",
		}, []string{"kind", "result"}),
		current: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "uplink_operations_running",
			Help: "Operations this replica is running now.",
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(e.total, e.current)
	}
	return e
}

// Holder names this replica in leases.
func (e *Engine) Holder() string { return e.holder }

// Run scans for operations to run until ctx ends, then waits for the
// running ones to stop (they are resumed elsewhere once their lease ends).
func (e *Engine) Run(ctx context.Context) {
	t := time.NewTicker(e.cfg.Scan)
	defer t.Stop()
	for {
		e.scan(ctx)
		select {
		case <-ctx.Done():
			e.wg.Wait()
			return
		case <-t.C:
		case <-e.wake.C():
		}
	}
}

func (e *Engine) scan(ctx context.Context) {
	ids, err := e.j.Unfinished(ctx)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("operations: scan failed", "err", err)
		}
		return
	}
	for _, id := range ids {
		e.try(ctx, id)
	}
}

// try takes id's lease if it is free (queued, or its holder went silent)
// and runs it in the background.
func (e *Engine) try(ctx context.Context, id string) {
	e.mu.Lock()
	if e.running[id] {
		e.mu.Unlock()
		return
	}
	e.running[id] = true
	e.mu.Unlock()
	release := func() {
		e.mu.Lock()
		delete(e.running, id)
		e.mu.Unlock()
	}

	var token int64
	op, err := e.j.Update(ctx, id, func(op *Operation) error {
		now := time.Now().UTC()
		if op.State.Done() {
			return errNothingToDo
		}
		if op.Lease != nil && now.Before(op.Lease.Expires) {
			return errNothingToDo // someone runs it
		}
		prev := op.Lease
		token = 1
		if prev != nil {
			token = prev.Token + 1
		}
		op.Lease = &Lease{Holder: e.holder, Token: token, Expires: now.Add(e.cfg.Lease)}
		op.Attempts++
		if prev != nil {
			op.AddLog(now, fmt.Sprintf("taken over by %s: %s stopped renewing its lease", e.holder, prev.Holder))
		}
		if op.Attempts > e.cfg.MaxAttempts {
			finish(op, now, fmt.Errorf("abandoned after %d attempts: every replica running it stopped", op.Attempts-1))
			return nil
		}
		if op.State == Queued {
			op.State, op.StartedAt = Running, &now
		}
		return nil
	})
	if err != nil {
		release()
		if !errors.Is(err, errNothingToDo) && ctx.Err() == nil {
			e.log.Warn("operations: could not take lease", "operation", id, "err", err)
		}
		return
	}
	if op.State.Done() {
		release()
		e.total.WithLabelValues(string(op.Kind), string(op.State)).Inc()
		return
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer release()
		e.execute(ctx, op, token)
		e.wake.Signal() // finishing may have queued the next operation
	}()
}

func finish(op *Operation, now time.Time, err error) {
	op.FinishedAt = &now
	op.State = Succeeded
	if err != nil {
		op.State, op.Error = Failed, err.Error()
		op.AddLog(now, "failed: "+err.Error())
	}
	op.Recount()
}

// run is one operation in this replica, fenced by its lease token.
type run struct {
	e     *Engine
	id    string
	token int64

	mu      sync.Mutex
	pending []LogLine
}

func (r *run) update(ctx context.Context, fn func(op *Operation) error) (*Operation, error) {
	return r.e.j.Update(ctx, r.id, func(op *Operation) error {
		if op.Lease == nil || op.Lease.Token != r.token || op.Lease.Holder != r.e.holder {
			return errLostLease
		}
		r.mu.Lock()
		op.Log = append(op.Log, r.pending...) // AddLog below bounds it
		r.pending = nil
		r.mu.Unlock()
		op.AddLog(time.Now().UTC())
		return fn(op)
	})
}

func (r *run) logf(line string) {
	r.mu.Lock()
	r.pending = append(r.pending, LogLine{At: time.Now().UTC(), Line: line})
	r.mu.Unlock()
}

func (e *Engine) execute(parent context.Context, op *Operation, token int64) {
	e.current.Inc()
	defer e.current.Dec()
	// Detached from the scan: a replica shutting down stops renewing and
	// abandons its operations to the others only through its lease.
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	r := &run{e: e, id: op.ID, token: token}
	log := e.log.With("operation", op.ID, "kind", op.Kind)
	log.Info("operation started", "attempt", op.Attempts)

	// Renew the lease, and flush log lines so watchers see them, until
	// the run ends.
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(min(time.Second, e.cfg.Lease/3))
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			r.mu.Lock()
			quiet := len(r.pending) == 0
			r.mu.Unlock()
			if quiet && time.Since(last) < e.cfg.Lease/3 {
				continue
			}
			last = time.Now()
			_, err := r.update(ctx, func(op *Operation) error {
				op.Lease.Expires = time.Now().UTC().Add(e.cfg.Lease)
				return nil
			})
			if errors.Is(err, errLostLease) {
				log.Warn("operation: lease lost, stopping")
				cancel()
				return
			}
		}
	}()
	defer func() { cancel(); <-renewed }()

	err := e.steps(ctx, r, op, log)
	if errors.Is(err, errLostLease) || parent.Err() != nil {
		return // someone else runs it now, or we are shutting down
	}
	final, uerr := r.update(context.WithoutCancel(ctx), func(o *Operation) error {
		finish(o, time.Now().UTC(), err)
		return nil
	})
	if uerr != nil {
		log.Error("operation: could not record the outcome", "err", uerr)
		return
	}
	e.total.WithLabelValues(string(final.Kind), string(final.State)).Inc()
	log.Info("operation finished", "state", final.State, "error", final.Error)
}

// steps runs every step not finished yet, in order.
func (e *Engine) steps(ctx context.Context, r *run, op *Operation, log *slog.Logger) error {
	t, err := e.j.Target(ctx, op)
	if err != nil {
		return err
	}
	if len(op.Steps) == 0 {
		names := e.b.Steps(op, t)
		op, err = r.update(ctx, func(o *Operation) error {
			if len(o.Steps) == 0 {
				for _, n := range names {
					o.Steps = append(o.Steps, Step{Name: n, State: StepPending})
				}
				o.Recount()
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for i, s := range op.Steps {
		if s.State.Finished() {
			continue
		}
		now := time.Now().UTC()
		if _, err := r.update(ctx, func(o *Operation) error {
			o.Steps[i].State, o.Steps[i].StartedAt = StepRunning, &now
			return nil
		}); err != nil {
			return err
		}
		serr := e.b.Do(ctx, s.Name, op, t, r.logf)
		if ctx.Err() != nil {
			return errLostLease
		}
		state := StepDone
		switch {
		case errors.Is(serr, ErrSkipped):
			state, serr = StepSkipped, nil
		case serr != nil:
			state = StepFailed
		}
		end := time.Now().UTC()
		if _, err := r.update(ctx, func(o *Operation) error {
			o.Steps[i].State, o.Steps[i].FinishedAt = state, &end
			o.Recount()
			return nil
		}); err != nil {
			return err
		}
		if serr != nil {
			log.Warn("operation step failed", "step", s.Name, "err", serr)
			return fmt.Errorf("%s: %w", s.Name, serr)
		}
	}
	return nil
}
