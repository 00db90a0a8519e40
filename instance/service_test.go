package instance_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/filesystem"
)

var testApp = artifact.App{Org: "acme", Name: "hello"}

// backend is the no-backend engine's steps, made to fail on demand: a
// change or upgrade to a commit marked bad fails at its first step. While gate is open
// (not nil), the first step waits for it to close.
type backend struct {
	delay time.Duration
	mu    sync.Mutex
	bad   map[string]bool
	gate  chan struct{}
}

func (b *backend) setBad(commit string, bad bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bad == nil {
		b.bad = map[string]bool{}
	}
	b.bad[commit] = bad
}

func (b *backend) hold() {
	b.mu.Lock()
	b.gate = make(chan struct{})
	b.mu.Unlock()
}

func (b *backend) release() {
	b.mu.Lock()
	close(b.gate)
	b.gate = nil
	b.mu.Unlock()
}

func (b *backend) Steps(op *operation.Operation, t operation.Target) []string {
	return operation.NoBackend{}.Steps(op, t)
}

func (b *backend) Do(ctx context.Context, step string, op *operation.Operation, t operation.Target, log func(string)) error {
	b.mu.Lock()
	gate, bad := b.gate, b.bad[t.Commit]
	b.mu.Unlock()
	if gate != nil && step == b.Steps(op, t)[0] {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if b.delay > 0 {
		select {
		case <-time.After(b.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if bad {
		return fmt.Errorf("apk add %s: unable to install from %s", t.Package, t.Commit)
	}
	log(step + ": " + t.Commit)
	return nil
}

// env is storage (the filesystem driver) with published builds, and the
// services and engines that run on it.
type env struct {
	t    *testing.T
	dir  string
	refs *ref.Store
	drv  storage.Driver
	key  apktest.Key
	svc  *instance.Service
}

func newEnv(t *testing.T) *env {
	dir := t.TempDir()
	drv, err := filesystem.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dir: dir, drv: drv, refs: ref.NewStore(drv), key: apktest.NewKey(t)}
}

// start runs a Service and an engine on the env's storage, as one
// replica does, until the returned stop is called (or the test ends).
// Each call is another replica: it shares nothing in memory with the
// previous ones.
func (e *env) start(b operation.Backend, maxAttempts int) (stop func()) {
	drv, err := filesystem.New(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	refs := ref.NewStore(drv)
	wake := operation.NewWakeup()
	svc := instance.New(instance.Config{
		Storage: drv, Refs: refs, Resolver: refs, DistributionURL: "http://uplink.test:4080", Wakeup: wake,
	})
	eng := operation.NewEngine(svc, b, operation.EngineConfig{Lease: time.Second, Scan: 50 * time.Millisecond, MaxAttempts: maxAttempts,
		Wakeup: wake, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { eng.Run(ctx); close(done) }()
	e.svc = svc
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(stop)
	return stop
}

func commitOf(label string) string { return fmt.Sprintf("%x", sha1.Sum([]byte(label))) }

// publish uploads a repository with package hello at version as commit
// label, moves branch to it and tells the service, as the admin API does.
func (e *env) publish(label, branch, version string) string {
	e.t.Helper()
	ctx := context.Background()
	commit := commitOf(label)
	files := apktest.BuildRepository(e.t, e.key, apktest.DefaultArch, apktest.Package{Name: "hello", Version: version})
	for p, b := range files {
		arch, name, _ := strings.Cut(p, "/")
		if _, err := e.drv.Put(ctx, artifact.Key(testApp, commit, arch, name), bytes.NewReader(b), int64(len(b)), storage.Condition{}); err != nil {
			e.t.Fatal(err)
		}
	}
	if _, err := e.refs.Publish(ctx, testApp, ref.PublishRequest{Commit: commit, Branch: branch}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.svc.OnPublish(ctx, testApp, branch, commit); err != nil {
		e.t.Fatal(err)
	}
	return commit
}

func (e *env) spec(ch instance.Channel) instance.Spec {
	return instance.Spec{App: testApp.String(), Package: "hello", Channel: ch,
		Instances: instance.Instances{Count: 2, Image: "alpine/3.20"}, PublicKey: string(e.key.PublicPEM()), KeyName: e.key.Name}
}

func (e *env) put(ch instance.Channel) (instance.View, *operation.Operation, bool) {
	e.t.Helper()
	v, op, created, err := e.svc.Put(context.Background(), "web", e.spec(ch))
	if err != nil {
		e.t.Fatalf("Put %s: %v", ch, err)
	}
	return v, op, created
}

func (e *env) setChannel(ch instance.Channel) *operation.Operation {
	e.t.Helper()
	op, err := e.svc.SetChannel(context.Background(), "web", ch)
	if err != nil {
		e.t.Fatalf("SetChannel %s: %v", ch, err)
	}
	return op
}

func (e *env) get() instance.View {
	e.t.Helper()
	v, err := e.svc.Get(context.Background(), "web")
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

func (e *env) ops() []*operation.Operation {
	e.t.Helper()
	ops, err := e.svc.Operations(context.Background(), "web")
	if err != nil {
		e.t.Fatal(err)
	}
	return ops
}

func (e *env) history() []instance.HistoryEntry {
	e.t.Helper()
	h, err := e.svc.History(context.Background(), "web")
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// wait waits for operation id to end and returns it.
func (e *env) wait(id string) *operation.Operation {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		op, err := e.svc.Operation(context.Background(), id)
		if err != nil {
			e.t.Fatal(err)
		}
		if op.State.Done() {
			return op
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("operation %s did not end: %s %+v", id, op.State, op.Steps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settle waits until no operation of the installation runs and returns
// them all, newest first.
func (e *env) settle() []*operation.Operation {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ops := e.ops()
		busy := false
		for _, op := range ops {
			busy = busy || !op.State.Done()
		}
		if !busy {
			// A finished operation may queue the next one in the same write;
			// look once more after the engine had a chance to.
			time.Sleep(100 * time.Millisecond)
			if again := e.ops(); len(again) == len(ops) && again[0].State.Done() {
				return again
			}
			continue
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("operations did not end: %+v", ops[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) expectRuns(v instance.View, ch instance.Channel, commit string) {
	e.t.Helper()
	url := "http://uplink.test:4080/distribution/" + ch.Ref() + "/" + testApp.String()
	if v.Channel != ch || v.ResolvedCommit != commit || v.RepositoryURL != url {
		e.t.Fatalf("installation shows channel %+v commit %q url %q; want %+v %q %q", v.Channel, v.ResolvedCommit, v.RepositoryURL, ch, commit, url)
	}
}

var (
	mainBranch = instance.Channel{Branch: "main"}
	badBranch  = instance.Channel{Branch: "bad"}
)

// TestFailedChangeKeepsChannel: a change that fails leaves the channel,
// commit and repository line the instances run and shows the failed
// target as last_attempt; publishes to the failed branch start nothing,
// publishes to the current one still upgrade, and retrying the change
// works and clears last_attempt.
func TestFailedChangeKeepsChannel(t *testing.T) {
	e := newEnv(t)
	b := &backend{}
	e.start(b, 0)
	a := e.publish("A", "main", "1.0-r0")
	x := e.publish("X", "bad", "9.0-r0")
	b.setBad(x, true)

	_, op, _ := e.put(mainBranch)
	if op = e.wait(op.ID); op.State != operation.Succeeded {
		t.Fatalf("bootstrap: %s %s", op.State, op.Error)
	}
	e.expectRuns(e.get(), mainBranch, a)

	change := e.setChannel(badBranch)
	if v := e.get(); v.Pending == nil || v.Pending.Operation != change.ID || v.Pending.Channel != badBranch || v.Pending.Commit != x {
		t.Fatalf("while the change runs: pending %+v", v.Pending)
	}
	if change = e.wait(change.ID); change.State != operation.Failed {
		t.Fatalf("change to a bad commit: %s", change.State)
	}
	v := e.get()
	e.expectRuns(v, mainBranch, a)
	la := v.LastAttempt
	if la == nil || la.Channel != badBranch || la.Commit != x || la.Operation != change.ID || la.Error != change.Error ||
		!strings.Contains(la.Error, "unable to install") || v.Pending != nil {
		t.Fatalf("last_attempt %+v, pending %+v; want the failed change %s", la, v.Pending, change.ID)
	}
	h := e.history()
	if len(h) != 2 || h[0].Operation != change.ID || h[0].Result != operation.Failed || h[0].From == nil || *h[0].From != mainBranch {
		t.Fatalf("history %+v", h)
	}

	// A publish to the branch that was only a failed attempt starts nothing.
	before := len(e.ops())
	y := e.publish("Y", "bad", "9.1-r0")
	time.Sleep(300 * time.Millisecond)
	if got := e.ops(); len(got) != before {
		t.Fatalf("a publish to the failed branch started %s %s", got[0].Kind, got[0].ID)
	}
	e.expectRuns(e.get(), mainBranch, a)

	// A publish to the branch the instances run upgrades them; the failed
	// change to another branch stays reported.
	c := e.publish("C", "main", "2.0-r0")
	ops := e.settle()
	up := ops[0]
	if len(ops) != before+1 || up.Kind != operation.KindUpgrade || up.State != operation.Succeeded || up.From.Resolved != a || up.To.Resolved != c || instance.ChannelOf(*up.To) != mainBranch {
		t.Fatalf("upgrade after a failed change: %+v", up)
	}
	v = e.get()
	e.expectRuns(v, mainBranch, c)
	if v.LastAttempt == nil || v.LastAttempt.Operation != change.ID {
		t.Fatalf("an upgrade of main hid the failed change to bad: %+v", v.LastAttempt)
	}

	// Retrying the change (bad now points at Y, which installs) works and
	// clears last_attempt.
	retry := e.setChannel(badBranch)
	if retry.From == nil || instance.ChannelOf(*retry.From) != mainBranch || retry.From.Resolved != c {
		t.Fatalf("the retry starts from %+v, want main at C", retry.From)
	}
	if retry = e.wait(retry.ID); retry.State != operation.Succeeded {
		t.Fatalf("retry: %s %s", retry.State, retry.Error)
	}
	v = e.get()
	e.expectRuns(v, badBranch, y)
	if v.LastAttempt != nil {
		t.Fatalf("a successful change left last_attempt %+v", v.LastAttempt)
	}
	if h := e.history(); len(h) != 3 || h[0].Result != operation.Succeeded || *h[0].From != mainBranch || h[1].Result != operation.Failed {
		t.Fatalf("history %+v", h)
	}
}

// TestFailedFirstBootstrap: a new installation whose first change fails
// runs no channel: the view has none (no "channel" in its JSON), no
// commit and no repository line, and last_attempt. PUTting the same spec
// again retries the change; once it succeeded, the same PUT is a no-op.
func TestFailedFirstBootstrap(t *testing.T) {
	e := newEnv(t)
	b := &backend{}
	e.start(b, 0)
	x := e.publish("X", "bad", "1.0-r0")
	b.setBad(x, true)

	v, op, created := e.put(badBranch)
	if !created || op == nil || v.Pending == nil || v.Pending.Operation != op.ID || !v.Channel.IsZero() || v.RepositoryURL != "" {
		t.Fatalf("new installation: created %v, op %v, view %+v", created, op, v)
	}
	if op = e.wait(op.ID); op.State != operation.Failed {
		t.Fatalf("bootstrap of a bad commit: %s", op.State)
	}
	v = e.get()
	if !v.Channel.IsZero() || v.ResolvedCommit != "" || v.RepositoryURL != "" || v.LastAttempt == nil || v.LastAttempt.Operation != op.ID ||
		v.LastAttempt.Channel != badBranch || v.LastAttempt.Commit != x {
		t.Fatalf("after a failed first bootstrap: %+v", v)
	}
	raw, _ := json.Marshal(v)
	var fields map[string]json.RawMessage
	json.Unmarshal(raw, &fields)
	if _, ok := fields["channel"]; ok || string(fields["repository_url"]) != `""` || fields["last_attempt"] == nil {
		t.Fatalf("JSON of an installation that runs nothing: %s", raw)
	}

	// The same PUT again is a retry, not a no-op.
	b.setBad(x, false)
	_, retry, created := e.put(badBranch)
	if created || retry == nil || retry.ID == op.ID || retry.From != nil {
		t.Fatalf("PUT after a failed bootstrap: created %v, op %+v", created, retry)
	}
	if retry = e.wait(retry.ID); retry.State != operation.Succeeded {
		t.Fatalf("retried bootstrap: %s %s", retry.State, retry.Error)
	}
	v = e.get()
	e.expectRuns(v, badBranch, x)
	if v.LastAttempt != nil {
		t.Fatalf("last_attempt after success: %+v", v.LastAttempt)
	}
	if _, again, _ := e.put(badBranch); again != nil {
		t.Fatalf("PUT of the spec the installation runs started %s", again.ID)
	}
	h := e.history()
	if len(h) != 2 || h[0].Operation != retry.ID || h[0].Result != operation.Succeeded || h[0].From != nil || h[1].Result != operation.Failed {
		t.Fatalf("history %+v", h)
	}
}

// TestPublishDuringChange: while a change from main to branch X runs, a
// publish to X is applied once the change succeeds and one to main is
// not; when such a change fails instead, the publish to main is applied
// and the one to X is not. A PUT asking again for X is no new change; one
// asking for main is refused while the change runs.
func TestPublishDuringChange(t *testing.T) {
	x := instance.Channel{Branch: "x"}
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("fail=%v", fail), func(t *testing.T) {
			e := newEnv(t)
			b := &backend{}
			e.start(b, 0)
			a := e.publish("A", "main", "1.0-r0")
			x1 := e.publish("X1", "x", "5.0-r0")
			b.setBad(x1, fail)
			_, op, _ := e.put(mainBranch)
			e.wait(op.ID)

			b.hold()
			change := e.setChannel(x)
			if _, again, _ := e.put(x); again != nil {
				t.Fatalf("PUT of the channel a running change moves to started %s", again.ID)
			}
			var busy *instance.BusyError
			if _, _, _, err := e.svc.Put(context.Background(), "web", e.spec(instance.Channel{Commit: a})); !errors.As(err, &busy) || busy.Running != change.ID {
				t.Fatalf("PUT of another channel while %s runs: %v", change.ID, err)
			}
			m2 := e.publish("M2", "main", "1.1-r0")
			x2 := e.publish("X2", "x", "5.1-r0")
			if got := e.ops(); len(got) != 2 {
				t.Fatalf("publishes during a change started %s", got[0].ID)
			}
			e.expectRuns(e.get(), mainBranch, a)
			b.release()

			ops := e.settle()
			if len(ops) != 3 || ops[1].ID != change.ID || ops[0].Kind != operation.KindUpgrade || ops[0].State != operation.Succeeded {
				t.Fatalf("after the change: %d operations, newest %+v", len(ops), ops[0])
			}
			up := ops[0]
			v := e.get()
			if !fail {
				if instance.ChannelOf(*up.To) != x || up.From.Resolved != x1 || up.To.Resolved != x2 {
					t.Fatalf("upgrade after the change: %+v -> %+v", up.From, up.To)
				}
				e.expectRuns(v, x, x2)
				return
			}
			if instance.ChannelOf(*up.To) != mainBranch || up.From.Resolved != a || up.To.Resolved != m2 {
				t.Fatalf("upgrade after the failed change: %+v -> %+v", up.From, up.To)
			}
			e.expectRuns(v, mainBranch, m2)
			if v.LastAttempt == nil || v.LastAttempt.Operation != change.ID {
				t.Fatalf("last_attempt %+v", v.LastAttempt)
			}
		})
	}
}

// TestUpgradeFromWhatRuns: an upgrade's from is the commit the instances
// run, not the target of a failed upgrade in between; a succeeded upgrade
// on the channel clears the failed one's last_attempt.
func TestUpgradeFromWhatRuns(t *testing.T) {
	e := newEnv(t)
	b := &backend{}
	e.start(b, 0)
	a := e.publish("A", "main", "1.0-r0")
	_, op, _ := e.put(mainBranch)
	e.wait(op.ID)

	b.setBad(commitOf("B"), true)
	bad := e.publish("B", "main", "2.0-r0")
	ops := e.settle()
	if ops[0].Kind != operation.KindUpgrade || ops[0].State != operation.Failed {
		t.Fatalf("upgrade to a bad commit: %+v", ops[0])
	}
	v := e.get()
	e.expectRuns(v, mainBranch, a)
	if v.LastAttempt == nil || v.LastAttempt.Commit != bad || v.LastAttempt.Channel != mainBranch {
		t.Fatalf("last_attempt after a failed upgrade: %+v", v.LastAttempt)
	}

	c := e.publish("C", "main", "3.0-r0")
	ops = e.settle()
	if up := ops[0]; up.Kind != operation.KindUpgrade || up.State != operation.Succeeded || up.From.Resolved != a || up.To.Resolved != c {
		t.Fatalf("upgrade after a failed one: %+v -> %+v (%s)", up.From, up.To, up.State)
	}
	v = e.get()
	e.expectRuns(v, mainBranch, c)
	if v.LastAttempt != nil {
		t.Fatalf("last_attempt after a succeeded upgrade: %+v", v.LastAttempt)
	}
}

// TestTakeoverMidChange: a replica stops in the middle of a change;
// another one, sharing only storage, finishes it and ends in the same
// state: the channel moved, and the publish to the target branch held
// meanwhile applied. When the other replica gives the operation up
// instead, the channel stays and the publish to the old branch held
// meanwhile is applied.
func TestTakeoverMidChange(t *testing.T) {
	x := instance.Channel{Branch: "x"}
	for _, giveUp := range []bool{false, true} {
		t.Run(fmt.Sprintf("giveUp=%v", giveUp), func(t *testing.T) {
			e := newEnv(t)
			slow := &backend{delay: 150 * time.Millisecond}
			stop := e.start(slow, 0)
			a := e.publish("A", "main", "1.0-r0")
			x1 := e.publish("X1", "x", "5.0-r0")
			_, op, _ := e.put(mainBranch)
			e.wait(op.ID)

			change := e.setChannel(x)
			deadline := time.Now().Add(10 * time.Second)
			for {
				cur, err := e.svc.Operation(context.Background(), change.ID)
				if err != nil {
					t.Fatal(err)
				}
				if cur.State == operation.Running && cur.Progress.Done >= 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the change never ran: %+v", cur)
				}
				time.Sleep(10 * time.Millisecond)
			}
			m2 := e.publish("M2", "main", "1.1-r0")
			x2 := e.publish("X2", "x", "5.1-r0")
			stop()
			if cur, _ := e.svc.Operation(context.Background(), change.ID); cur.State.Done() {
				t.Fatalf("the change ended before the replica stopped: %s", cur.State)
			}

			maxAttempts := 0
			if giveUp {
				maxAttempts = 1
			}
			e.start(&backend{}, maxAttempts)
			final := e.wait(change.ID)
			ops := e.settle()
			up := ops[0]
			v := e.get()
			if !giveUp {
				if final.State != operation.Succeeded || final.Attempts != 2 || up.Kind != operation.KindUpgrade || up.From.Resolved != x1 || up.To.Resolved != x2 {
					t.Fatalf("taken over: %s after %d attempts, then %s %+v", final.State, final.Attempts, up.Kind, up.To)
				}
				e.expectRuns(v, x, x2)
				return
			}
			if final.State != operation.Failed || !strings.Contains(final.Error, "abandoned") {
				t.Fatalf("given up: %s %q", final.State, final.Error)
			}
			if up.Kind != operation.KindUpgrade || instance.ChannelOf(*up.To) != mainBranch || up.From.Resolved != a || up.To.Resolved != m2 || up.State != operation.Succeeded {
				t.Fatalf("after the given-up change: %+v", up)
			}
			e.expectRuns(v, mainBranch, m2)
			if v.LastAttempt == nil || v.LastAttempt.Operation != change.ID || v.LastAttempt.Channel != x {
				t.Fatalf("last_attempt %+v", v.LastAttempt)
			}
		})
	}
}
