package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/server"
)

// opsConfig makes operations quick to take over in tests.
func opsConfig(cfg server.Config) server.Config {
	cfg.OperationLease, cfg.OperationScan = 2*time.Second, 200*time.Millisecond
	cfg.DistributionURL = "http://uplink.test:4080"
	return cfg
}

func webSpec(key apktest.Key, ch instance.Channel) instance.Spec {
	return instance.Spec{
		App: testApp, Package: "hello", Channel: ch,
		Instances: instance.Instances{Count: 2, Image: "alpine/3.20"},
		PublicKey: string(key.PublicPEM()), KeyName: key.Name,
	}
}

func putInstallation(t *testing.T, n *node, name string, spec instance.Spec) instance.View {
	t.Helper()
	var v instance.View
	if err := n.api.JSON(context.Background(), http.MethodPut, "/api/v1/installations/"+name, spec, &v); err != nil {
		t.Fatalf("PUT installation: %v", err)
	}
	return v
}

func getInstallation(t *testing.T, n *node, name string) instance.View {
	t.Helper()
	var v instance.View
	if err := n.api.Get(context.Background(), "/api/v1/installations/"+name, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func setChannel(t *testing.T, n *node, name string, ch map[string]string) (*operation.Operation, error) {
	var op operation.Operation
	err := n.api.JSON(context.Background(), http.MethodPut, "/api/v1/installations/"+name+"/channel", ch, &op)
	return &op, err
}

// waitOp waits for an operation to end and returns it.
func waitOp(t *testing.T, n *node, id string, within time.Duration) *operation.Operation {
	t.Helper()
	var op operation.Operation
	eventually(t, within, "operation "+id+" ends", func() bool {
		if err := n.api.Get(context.Background(), "/api/v1/operations/"+id, &op); err != nil {
			t.Fatal(err)
		}
		return op.State.Done()
	})
	return &op
}

func operations(t *testing.T, n *node, name string) []*operation.Operation {
	t.Helper()
	var out struct{ Operations []*operation.Operation }
	if err := n.api.Get(context.Background(), "/api/v1/operations?installation="+name, &out); err != nil {
		t.Fatal(err)
	}
	return out.Operations
}

func history(t *testing.T, n *node, name string) []instance.HistoryEntry {
	t.Helper()
	var out struct{ History []instance.HistoryEntry }
	if err := n.api.Get(context.Background(), "/api/v1/installations/"+name+"/history", &out); err != nil {
		t.Fatal(err)
	}
	return out.History
}

// TestRollbackStory is what operators came for, through the running
// server on real S3 and Redis: track main, pin to an older commit by an
// abbreviated SHA, publish while pinned (nothing moves), track main again.
func TestRollbackStory(t *testing.T) {
	rdb := testenvRedis(t)
	cfg := opsConfig(s3Config(t, baseConfig(t)))
	cfg.Redis = "redis://" + rdb + "/0"
	n := start(t, cfg)
	key := apktest.NewKey(t)
	a, b, c, d := commitOf("A"), commitOf("B"), commitOf("C"), commitOf("D")
	n.publish(t, a, "main", hello(t, key, "1.0-r0", "A"))
	n.publish(t, b, "main", hello(t, key, "2.0-r0", "B"))

	v := putInstallation(t, n, "web", webSpec(key, instance.Channel{Branch: "main"}))
	if v.LastOperation == nil || v.LastOperation.Kind != operation.KindChangeChannel {
		t.Fatalf("creating an installation starts its bootstrap: %+v", v.LastOperation)
	}
	if op := waitOp(t, n, v.LastOperation.ID, 10*time.Second); op.State != operation.Succeeded {
		t.Fatalf("bootstrap: %s %s", op.State, op.Error)
	}
	if v := getInstallation(t, n, "web"); v.RepositoryURL != "http://uplink.test:4080/distribution/main/"+testApp || v.ResolvedCommit != b {
		t.Fatalf("tracking main: url %q commit %q", v.RepositoryURL, v.ResolvedCommit)
	}

	// Roll back: pin to A by an abbreviated SHA.
	op, err := setChannel(t, n, "web", map[string]string{"commit": a[:8]})
	if err != nil {
		t.Fatal(err)
	}
	op = waitOp(t, n, op.ID, 10*time.Second)
	if op.State != operation.Succeeded || op.Kind != operation.KindChangeChannel || op.Commit != a ||
		op.From == nil || op.From.Branch != "main" || op.To.Commit != a || op.Progress.Done != op.Progress.Total {
		t.Fatalf("pin: %+v", op)
	}
	if len(op.Steps) < 2 || op.Steps[0].Name != instance.VerifyStep || op.Steps[0].State != operation.StepDone {
		t.Fatalf("pin steps: %+v", op.Steps)
	}
	for _, s := range op.Steps[1:] {
		if s.State != operation.StepSkipped || s.StartedAt == nil || s.FinishedAt == nil {
			t.Fatalf("without an instance backend every instance step is recorded as skipped: %+v", s)
		}
	}
	v = getInstallation(t, n, "web")
	if v.RepositoryURL != "http://uplink.test:4080/distribution/"+a+"/"+testApp || v.ResolvedCommit != a || v.Channel.Commit != a {
		t.Fatalf("pinned: url %q commit %q channel %+v", v.RepositoryURL, v.ResolvedCommit, v.Channel)
	}
	h := history(t, n, "web")
	if len(h) != 2 || h[0].Operation != op.ID || h[0].Commit != a || h[0].To.Commit != a || h[0].From == nil ||
		h[0].From.Branch != "main" || h[0].Result != operation.Succeeded || h[1].To.Branch != "main" || h[1].From != nil {
		t.Fatalf("history: %+v", h)
	}

	// Publish C while pinned: the installation does not move.
	before := len(operations(t, n, "web"))
	n.publish(t, c, "main", hello(t, key, "3.0-r0", "C"))
	time.Sleep(500 * time.Millisecond) // an upgrade, were one started, would be queued by now
	if got := len(operations(t, n, "web")); got != before {
		t.Fatalf("a publish while pinned started %d operations", got-before)
	}
	if v := getInstallation(t, n, "web"); v.ResolvedCommit != a {
		t.Fatalf("pinned installation moved to %s", v.ResolvedCommit)
	}

	// Track main again: it resolves to C.
	op, err = setChannel(t, n, "web", map[string]string{"branch": "main"})
	if err != nil {
		t.Fatal(err)
	}
	if op = waitOp(t, n, op.ID, 10*time.Second); op.State != operation.Succeeded || op.Commit != c {
		t.Fatalf("track main: %s commit %s", op.State, op.Commit)
	}
	if v := getInstallation(t, n, "web"); v.ResolvedCommit != c || !strings.HasSuffix(v.RepositoryURL, "/distribution/main/"+testApp) {
		t.Fatalf("tracking again: %q %q", v.ResolvedCommit, v.RepositoryURL)
	}

	// Tracking: a publish upgrades it.
	n.publish(t, d, "main", hello(t, key, "4.0-r0", "D"))
	var up *operation.Operation
	eventually(t, 5*time.Second, "an upgrade starts", func() bool {
		ops := operations(t, n, "web")
		if ops[0].Kind == operation.KindUpgrade {
			up = ops[0]
		}
		return up != nil
	})
	if up = waitOp(t, n, up.ID, 10*time.Second); up.State != operation.Succeeded || up.Commit != d || up.From.Resolved != c {
		t.Fatalf("upgrade: %+v", up)
	}
	if got := len(history(t, n, "web")); got != 3 {
		t.Fatalf("an upgrade is not a channel change: history has %d entries", got)
	}
}

// TestFailingOperation: pinning to a commit whose repository lacks the
// package fails, with the reason in the log, and the history says so.
func TestFailingOperation(t *testing.T) {
	n := start(t, opsConfig(baseConfig(t)))
	key := apktest.NewKey(t)
	n.publish(t, commitOf("A"), "main", hello(t, key, "1.0-r0", "A"))
	other := apktest.BuildRepository(t, key, apktest.DefaultArch, apktest.Package{Name: "other", Version: "1.0-r0"})
	n.publish(t, commitOf("X"), "experiments", other)
	v := putInstallation(t, n, "web", webSpec(key, instance.Channel{Branch: "main"}))
	waitOp(t, n, v.LastOperation.ID, 10*time.Second)

	op, err := setChannel(t, n, "web", map[string]string{"commit": commitOf("X")})
	if err != nil {
		t.Fatal(err)
	}
	op = waitOp(t, n, op.ID, 10*time.Second)
	if op.State != operation.Failed || !strings.Contains(op.Error, `package "hello" is not in`) {
		t.Fatalf("pin to a commit without the package: %s %q", op.State, op.Error)
	}
	var logged bool
	for _, l := range op.Log {
		logged = logged || strings.Contains(l.Line, `"hello" is not in`)
	}
	if !logged || op.Steps[0].State != operation.StepFailed || op.Steps[1].State != operation.StepPending {
		t.Fatalf("failed op: log %+v steps %+v", op.Log, op.Steps)
	}
	if h := history(t, n, "web"); h[0].Result != operation.Failed {
		t.Fatalf("history result %s", h[0].Result)
	}
}

// TestChannelConflicts: one operation at a time per installation; a
// second request gets 409 naming the running one. Refs with nothing
// published are 404.
func TestChannelConflicts(t *testing.T) {
	cfg := opsConfig(baseConfig(t))
	cfg.NoBackendDelay = 300 * time.Millisecond
	n := start(t, cfg)
	key := apktest.NewKey(t)
	n.publish(t, commitOf("A"), "main", hello(t, key, "1.0-r0", "A"))
	v := putInstallation(t, n, "web", webSpec(key, instance.Channel{Branch: "main"}))

	_, err := setChannel(t, n, "web", map[string]string{"commit": commitOf("A")})
	var ce *client.Error
	if !asClientError(err, &ce) || ce.Status != http.StatusConflict || !strings.Contains(ce.Message, v.LastOperation.ID) {
		t.Fatalf("while %s runs: %v", v.LastOperation.ID, err)
	}
	waitOp(t, n, v.LastOperation.ID, 20*time.Second)
	for _, ch := range []map[string]string{{"commit": commitOf("nope")}, {"commit": commitOf("nope")[:9]}, {"branch": "nope"}, {"tag": "nope"}} {
		if _, err := setChannel(t, n, "web", ch); !asClientError(err, &ce) || ce.Status != http.StatusNotFound {
			t.Errorf("%v: %v, want 404", ch, err)
		}
	}
	for _, ch := range []map[string]string{{}, {"commit": "xyz"}, {"branch": "a..b"}, {"branch": "main", "commit": commitOf("A")}} {
		if _, err := setChannel(t, n, "web", ch); !asClientError(err, &ce) || ce.Status != http.StatusBadRequest {
			t.Errorf("%v: %v, want 400", ch, err)
		}
	}
	if _, err := setChannel(t, n, "nope", map[string]string{"branch": "main"}); !asClientError(err, &ce) || ce.Status != http.StatusNotFound {
		t.Errorf("unknown installation: %v", err)
	}
}

// TestInstallationValidation: each mistake gets a 400 (or 422 for a
// channel with nothing published) that says what is wrong, and nothing
// is stored.
func TestInstallationValidation(t *testing.T) {
	n := start(t, opsConfig(baseConfig(t)))
	key := apktest.NewKey(t)
	n.publish(t, commitOf("A"), "main", hello(t, key, "1.0-r0", "A"))
	good := webSpec(key, instance.Channel{Branch: "main"})
	rsaPKCS1 := strings.Replace(strings.Replace(string(key.PublicPEM()), "BEGIN PUBLIC", "BEGIN RSA PUBLIC", 1), "END PUBLIC", "END RSA PUBLIC", 1)
	for _, tc := range []struct {
		what   string
		name   string
		mutate func(*instance.Spec)
		status int
		says   string
	}{
		{"unknown app", "web", func(s *instance.Spec) { s.App = "acme/nope" }, 400, "unknown app"},
		{"bad app", "web", func(s *instance.Spec) { s.App = "nope" }, 400, "app"},
		{"bad package name", "web", func(s *instance.Spec) { s.Package = "he llo" }, 400, "package"},
		{"no package", "web", func(s *instance.Spec) { s.Package = "" }, 400, "package"},
		{"not PEM", "web", func(s *instance.Spec) { s.PublicKey = "ssh-rsa AAAA" }, 400, "public_key"},
		{"PKCS#1 key", "web", func(s *instance.Spec) { s.PublicKey = rsaPKCS1 }, 400, "public_key"},
		{"key name", "web", func(s *instance.Spec) { s.KeyName = "key.pem" }, 400, "key_name"},
		{"count too high", "web", func(s *instance.Spec) { s.Instances.Count = 1000 }, 400, "count"},
		{"count negative", "web", func(s *instance.Spec) { s.Instances.Count = -1 }, 400, "count"},
		{"no image", "web", func(s *instance.Spec) { s.Instances.Image = "" }, 400, "image"},
		{"two channels", "web", func(s *instance.Spec) { s.Channel.Commit = commitOf("A") }, 400, "exactly one"},
		{"no channel", "web", func(s *instance.Spec) { s.Channel = instance.Channel{} }, 400, "exactly one"},
		{"bad branch", "web", func(s *instance.Spec) { s.Channel.Branch = "a..b" }, 400, "branch"},
		{"unpublished branch", "web", func(s *instance.Spec) { s.Channel.Branch = "dev" }, 422, "dev"},
		{"bad name", "Web_1", func(*instance.Spec) {}, 400, "installation name"},
		{"long name", strings.Repeat("a", 51), func(*instance.Spec) {}, 400, "installation name"},
	} {
		spec := good
		spec.Instances.Profiles = nil
		tc.mutate(&spec)
		var v instance.View
		err := n.api.JSON(t.Context(), http.MethodPut, "/api/v1/installations/"+tc.name, spec, &v)
		var ce *client.Error
		if !asClientError(err, &ce) || ce.Status != tc.status || !strings.Contains(ce.Message, tc.says) {
			t.Errorf("%s: %v, want %d saying %q", tc.what, err, tc.status, tc.says)
		}
	}
	var list struct{ Installations []instance.View }
	if err := n.api.Get(t.Context(), "/api/v1/installations", &list); err != nil || len(list.Installations) != 0 {
		t.Fatalf("refused installations were stored: %+v %v", list, err)
	}
	// Unknown fields are refused too.
	err := n.api.JSON(t.Context(), http.MethodPut, "/api/v1/installations/web", map[string]any{"app": testApp, "colour": "blue"}, nil)
	var ce *client.Error
	if !asClientError(err, &ce) || ce.Status != http.StatusBadRequest {
		t.Fatalf("unknown field: %v", err)
	}
}

// TestInstallationLifecycle: create (201), update without a channel change
// (200, no operation), update with one (an operation), list, delete (202,
// then 404 while its operations stay readable).
func TestInstallationLifecycle(t *testing.T) {
	n := start(t, opsConfig(baseConfig(t)))
	key := apktest.NewKey(t)
	a := commitOf("A")
	n.publish(t, a, "main", hello(t, key, "1.0-r0", "A"))
	spec := webSpec(key, instance.Channel{Branch: "main"})
	v := putInstallation(t, n, "web", spec)
	if v.Instances.Count != 2 || v.Instances.Project != "default" || len(v.Instances.Profiles) != 1 {
		t.Fatalf("defaults: %+v", v.Instances)
	}
	first := waitOp(t, n, v.LastOperation.ID, 10*time.Second)
	spec.Instances.Count = 3
	v = putInstallation(t, n, "web", spec)
	if v.Instances.Count != 3 || v.LastOperation.ID != first.ID {
		t.Fatalf("update without a channel change: %+v, last op %s", v.Instances, v.LastOperation.ID)
	}
	spec.Channel = instance.Channel{Commit: a[:7]}
	v = putInstallation(t, n, "web", spec)
	if v.Channel.Branch != "main" || v.Pending == nil || v.Pending.Channel.Commit != a || v.LastOperation.ID == first.ID || v.Pending.Operation != v.LastOperation.ID {
		t.Fatalf("update with a channel change: channel %+v pending %+v, last op %s", v.Channel, v.Pending, v.LastOperation.ID)
	}
	waitOp(t, n, v.LastOperation.ID, 10*time.Second)
	if v = getInstallation(t, n, "web"); v.Channel.Commit != a || v.Pending != nil {
		t.Fatalf("after the change: channel %+v pending %+v", v.Channel, v.Pending)
	}

	var del operation.Operation
	if err := n.api.JSON(t.Context(), http.MethodDelete, "/api/v1/installations/web", nil, &del); err != nil || del.Kind != operation.KindDelete {
		t.Fatalf("delete: %+v %v", del, err)
	}
	if op := waitOp(t, n, del.ID, 10*time.Second); op.State != operation.Succeeded {
		t.Fatalf("delete: %s", op.State)
	}
	var ce *client.Error
	if err := n.api.Get(t.Context(), "/api/v1/installations/web", &v); !asClientError(err, &ce) || ce.Status != http.StatusNotFound {
		t.Fatalf("after delete: %v", err)
	}
	if ops := operations(t, n, "web"); len(ops) != 3 || ops[0].ID != del.ID {
		t.Fatalf("operations after delete: %d", len(ops))
	}
}

// TestOperationEvents: the event stream sends each change of a running
// operation and ends with its final state.
func TestOperationEvents(t *testing.T) {
	cfg := opsConfig(baseConfig(t))
	cfg.NoBackendDelay = 100 * time.Millisecond
	n := start(t, cfg)
	key := apktest.NewKey(t)
	n.publish(t, commitOf("A"), "main", hello(t, key, "1.0-r0", "A"))
	v := putInstallation(t, n, "web", webSpec(key, instance.Channel{Branch: "main"}))

	req, _ := http.NewRequest(http.MethodGet, "http://"+n.srv.AdminAddr()+"/api/v1/operations/"+v.LastOperation.ID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	var events []operation.Operation
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var op operation.Operation
			if err := json.Unmarshal([]byte(data), &op); err != nil {
				t.Fatal(err)
			}
			events = append(events, op)
		}
	}
	if len(events) < 3 {
		t.Fatalf("%d events for an operation of several steps", len(events))
	}
	last := events[len(events)-1]
	if last.State != operation.Succeeded || last.Progress.Done != last.Progress.Total {
		t.Fatalf("last event: %s %+v", last.State, last.Progress)
	}
	for i := 1; i < len(events); i++ {
		if events[i].Progress.Done < events[i-1].Progress.Done {
			t.Fatalf("progress went back: %+v then %+v", events[i-1].Progress, events[i].Progress)
		}
	}
}

// TestUpgradeQueuedBehindRunning: a publish while the installation's
// operation runs is not lost: the upgrade follows when it ends.
func TestUpgradeQueuedBehindRunning(t *testing.T) {
	cfg := opsConfig(baseConfig(t))
	cfg.NoBackendDelay = 150 * time.Millisecond
	n := start(t, cfg)
	key := apktest.NewKey(t)
	n.publish(t, commitOf("A"), "main", hello(t, key, "1.0-r0", "A"))
	v := putInstallation(t, n, "web", webSpec(key, instance.Channel{Branch: "main"}))
	n.publish(t, commitOf("B"), "main", hello(t, key, "2.0-r0", "B")) // while the bootstrap runs
	waitOp(t, n, v.LastOperation.ID, 20*time.Second)
	var up *operation.Operation
	eventually(t, 10*time.Second, "the held-back upgrade starts", func() bool {
		ops := operations(t, n, "web")
		if ops[0].Kind == operation.KindUpgrade {
			up = ops[0]
		}
		return up != nil
	})
	if up = waitOp(t, n, up.ID, 20*time.Second); up.State != operation.Succeeded || up.Commit != commitOf("B") {
		t.Fatalf("held-back upgrade: %s %s", up.State, up.Commit)
	}
}

// TestFailedChangeKeepsChannel: a change to a branch whose commit lacks
// the package fails at verify-package; the installation still shows what
// its instances run (main at A) and the failed target as last_attempt.
// Publishes to the failed branch start nothing, one to main upgrades, and
// the change retried once the branch has the package clears last_attempt.
func TestFailedChangeKeepsChannel(t *testing.T) {
	n := start(t, opsConfig(baseConfig(t)))
	key := apktest.NewKey(t)
	a, x := commitOf("A"), commitOf("X")
	n.publish(t, a, "main", hello(t, key, "1.0-r0", "A"))
	n.publish(t, x, "bad", apktest.BuildRepository(t, key, apktest.DefaultArch, apktest.Package{Name: "other", Version: "1.0-r0"}))
	v := putInstallation(t, n, "web", webSpec(key, instance.Channel{Branch: "main"}))
	waitOp(t, n, v.LastOperation.ID, 10*time.Second)

	op, err := setChannel(t, n, "web", map[string]string{"branch": "bad"})
	if err != nil {
		t.Fatal(err)
	}
	if op = waitOp(t, n, op.ID, 10*time.Second); op.State != operation.Failed {
		t.Fatalf("change to a commit without the package: %s", op.State)
	}
	type attempt struct {
		Channel   map[string]string
		Commit    string
		Operation string
		Error     string
	}
	type shown struct {
		Channel        map[string]string
		ResolvedCommit string   `json:"resolved_commit"`
		RepositoryURL  string   `json:"repository_url"`
		LastAttempt    *attempt `json:"last_attempt"`
	}
	mainURL := "http://uplink.test:4080/distribution/main/" + testApp
	var got shown
	if err := n.api.Get(t.Context(), "/api/v1/installations/web", &got); err != nil {
		t.Fatal(err)
	}
	if got.Channel["branch"] != "main" || got.ResolvedCommit != a || got.RepositoryURL != mainURL {
		t.Fatalf("after a failed change: %+v", got)
	}
	if la := got.LastAttempt; la == nil || la.Channel["branch"] != "bad" || la.Commit != x || la.Operation != op.ID || !strings.Contains(la.Error, `"hello" is not in`) {
		t.Fatalf("last_attempt %+v", got.LastAttempt)
	}
	var list struct{ Installations []shown }
	if err := n.api.Get(t.Context(), "/api/v1/installations", &list); err != nil || len(list.Installations) != 1 || list.Installations[0].LastAttempt == nil {
		t.Fatalf("the list lacks last_attempt: %+v %v", list, err)
	}
	if h := history(t, n, "web"); h[0].Operation != op.ID || h[0].Result != operation.Failed || h[0].From.Branch != "main" {
		t.Fatalf("history %+v", h[0])
	}

	// The failed branch moves, and moves again with the package: nothing
	// starts.
	before := len(operations(t, n, "web"))
	n.publish(t, commitOf("Y"), "bad", apktest.BuildRepository(t, key, apktest.DefaultArch, apktest.Package{Name: "other", Version: "1.1-r0"}))
	z := commitOf("Z")
	n.publish(t, z, "bad", hello(t, key, "9.0-r0", "Z"))
	time.Sleep(500 * time.Millisecond) // an upgrade, were one started, would be queued by now
	if ops := operations(t, n, "web"); len(ops) != before {
		t.Fatalf("publishes to the failed branch started %s %s", ops[0].Kind, ops[0].ID)
	}

	// main moves: its instances upgrade from A.
	c := commitOf("C")
	n.publish(t, c, "main", hello(t, key, "2.0-r0", "C"))
	var up *operation.Operation
	eventually(t, 5*time.Second, "an upgrade starts", func() bool {
		if ops := operations(t, n, "web"); len(ops) > before {
			up = ops[0]
		}
		return up != nil
	})
	if up = waitOp(t, n, up.ID, 10*time.Second); up.Kind != operation.KindUpgrade || up.State != operation.Succeeded || up.From.Resolved != a || up.Commit != c {
		t.Fatalf("upgrade of main: %+v", up)
	}
	if v := getInstallation(t, n, "web"); v.Channel.Branch != "main" || v.ResolvedCommit != c || v.LastAttempt == nil {
		t.Fatalf("after the upgrade: channel %+v commit %s last_attempt %+v", v.Channel, v.ResolvedCommit, v.LastAttempt)
	}

	// Retried, the change succeeds and last_attempt goes.
	if op, err = setChannel(t, n, "web", map[string]string{"branch": "bad"}); err != nil {
		t.Fatal(err)
	}
	if op = waitOp(t, n, op.ID, 10*time.Second); op.State != operation.Succeeded || op.From.Resolved != c {
		t.Fatalf("retried change: %s from %+v: %s", op.State, op.From, op.Error)
	}
	var raw map[string]json.RawMessage
	if err := n.api.Get(t.Context(), "/api/v1/installations/web", &raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := raw["last_attempt"]; ok || string(raw["resolved_commit"]) != `"`+z+`"` || !strings.Contains(string(raw["repository_url"]), "/distribution/bad/") {
		t.Fatalf("after the retried change: last_attempt %s, resolved_commit %s, repository_url %s", raw["last_attempt"], raw["resolved_commit"], raw["repository_url"])
	}
}

// TestPublishDuringChange: while a change from main to branch x runs, a
// publish to x is applied after the change succeeds; one to main is not.
func TestPublishDuringChange(t *testing.T) {
	cfg := opsConfig(baseConfig(t))
	cfg.NoBackendDelay = 150 * time.Millisecond
	n := start(t, cfg)
	key := apktest.NewKey(t)
	a, x1, x2, m2 := commitOf("A"), commitOf("X1"), commitOf("X2"), commitOf("M2")
	n.publish(t, a, "main", hello(t, key, "1.0-r0", "A"))
	n.publish(t, x1, "x", hello(t, key, "5.0-r0", "X1"))
	v := putInstallation(t, n, "web", webSpec(key, instance.Channel{Branch: "main"}))
	waitOp(t, n, v.LastOperation.ID, 20*time.Second)

	change, err := setChannel(t, n, "web", map[string]string{"branch": "x"})
	if err != nil {
		t.Fatal(err)
	}
	n.publish(t, m2, "main", hello(t, key, "1.1-r0", "M2"))
	n.publish(t, x2, "x", hello(t, key, "5.1-r0", "X2"))
	if v := getInstallation(t, n, "web"); v.Channel.Branch != "main" || v.ResolvedCommit != a || v.Pending == nil || v.Pending.Operation != change.ID {
		t.Fatalf("while the change runs: channel %+v commit %s pending %+v", v.Channel, v.ResolvedCommit, v.Pending)
	}
	if change = waitOp(t, n, change.ID, 20*time.Second); change.State != operation.Succeeded || change.Commit != x1 {
		t.Fatalf("change: %s to %s", change.State, change.Commit)
	}
	var up *operation.Operation
	eventually(t, 10*time.Second, "the held-back upgrade starts", func() bool {
		if ops := operations(t, n, "web"); ops[0].Kind == operation.KindUpgrade {
			up = ops[0]
		}
		return up != nil
	})
	if up = waitOp(t, n, up.ID, 20*time.Second); up.State != operation.Succeeded || up.Commit != x2 || up.From.Resolved != x1 || up.To.Branch != "x" {
		t.Fatalf("held-back upgrade: %+v", up)
	}
	time.Sleep(500 * time.Millisecond) // a second upgrade, were one held, would be queued by now
	if ops := operations(t, n, "web"); len(ops) != 3 {
		t.Fatalf("%d operations, newest %s to %s; want bootstrap, change, one upgrade", len(ops), ops[0].Kind, ops[0].Commit)
	}
	if v := getInstallation(t, n, "web"); v.Channel.Branch != "x" || v.ResolvedCommit != x2 || v.Pending != nil {
		t.Fatalf("after: channel %+v commit %s pending %+v", v.Channel, v.ResolvedCommit, v.Pending)
	}
}
