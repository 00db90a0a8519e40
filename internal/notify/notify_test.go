package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/testenv"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/filesystem"
	"github.com/uplinkhq/uplink/storage/s3/s3test"
)

const secret = "receiver-shared-secret"

// TestSignature checks Sign against RFC 4231's test case 2 and against an
// HMAC computed the way the docs tell receivers to.
func TestSignature(t *testing.T) {
	got := Sign([]byte("Jefe"), []byte("what do ya want for nothing?"))
	if want := "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"; got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	body := []byte(`{"id":"x","type":"publish"}`)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	sig := "sha256=" + hex.EncodeToString(m.Sum(nil))
	if Sign([]byte(secret), body) != sig || !Verify([]byte(secret), body, sig) {
		t.Fatal("Sign disagrees with HMAC-SHA256 of the body")
	}
	if Verify([]byte("other"), body, sig) || Verify([]byte(secret), append(body, ' '), sig) || Verify([]byte(secret), body, "") {
		t.Fatal("Verify accepted a wrong key, a changed body or no signature")
	}
}

// TestBackoffBounds: each wait is the doubling interval ±50%, never more
// than Max, and the defaults are those the docs state.
func TestBackoffBounds(t *testing.T) {
	if d := (Retry{}).withDefaults(); d.Initial != time.Second || d.Max != 5*time.Minute || d.GiveUp != 24*time.Hour {
		t.Fatalf("defaults: %+v", d)
	}
	r := Retry{Initial: time.Second, Max: 5 * time.Minute}.withDefaults()
	for range 50 {
		next := r.waits()
		interval := r.Initial
		for i := range 20 {
			w := next()
			lo, hi := interval/2, min(interval+interval/2+time.Nanosecond, r.Max)
			if w < lo || w > hi {
				t.Fatalf("try %d: wait %v outside [%v, %v]", i+1, w, lo, hi)
			}
			interval = min(interval*2, r.Max)
		}
		if w := next(); w > r.Max || w < r.Max/2 {
			t.Fatalf("past the cap: wait %v, want within [%v, %v]", w, r.Max/2, r.Max)
		}
	}
}

func TestNewRefusesBadURLs(t *testing.T) {
	for _, u := range []string{"ftp://x/", "http://", "not a url", "/relative"} {
		if _, err := New(Config{URLs: []string{u}, Storage: fsDriver(t)}); err == nil || !strings.Contains(err.Error(), "--notify-url") {
			t.Errorf("New(%q): %v, want an error naming --notify-url", u, err)
		}
	}
	if n, err := New(Config{}); n != nil || err != nil {
		t.Fatalf("no URL: %v %v, want nil, nil", n, err)
	}
	var none *Notifier
	none.Raise(t.Context(), Event{}) // a nil notifier raises nothing
}

// receiver is a webhook endpoint that checks every delivery's signature
// and answers status (503 while "down").
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	status atomic.Int32
	mu     sync.Mutex
	got    []delivery
	tries  atomic.Int32
	// refuseUA: deliveries with this User-Agent get 502 (that replica's
	// route to the receiver is down).
	refuseUA string
	refused  int
}

type delivery struct {
	Header http.Header
	Event  Event
	Body   []byte
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t}
	r.status.Store(http.StatusNoContent)
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.tries.Add(1)
	body, _ := io.ReadAll(req.Body)
	status := int(r.status.Load())
	r.mu.Lock()
	if r.refuseUA != "" && req.Header.Get("User-Agent") == r.refuseUA {
		status = http.StatusBadGateway
		r.refused++
	}
	r.mu.Unlock()
	if status/100 != 2 {
		w.WriteHeader(status)
		return
	}
	if !Verify([]byte(secret), body, req.Header.Get("X-Uplink-Signature")) {
		r.t.Errorf("delivery with a bad signature %q", req.Header.Get("X-Uplink-Signature"))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil {
		r.t.Errorf("delivery is not an event: %v", err)
	}
	r.mu.Lock()
	r.got = append(r.got, delivery{Header: req.Header.Clone(), Event: ev, Body: body})
	r.mu.Unlock()
	w.WriteHeader(status)
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

func (r *receiver) waitFor(n int, within time.Duration) []delivery {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for len(r.deliveries()) < n {
		if time.Now().After(deadline) {
			r.t.Fatalf("%d deliveries within %v, want %d", len(r.deliveries()), within, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r.deliveries()
}

func fsDriver(t *testing.T) storage.Driver {
	d, err := filesystem.New(filepath.Join(t.TempDir(), "storage"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// drivers runs fn over the filesystem driver and a real S3 (versitygw).
func drivers(t *testing.T, fn func(t *testing.T, d storage.Driver)) {
	t.Run("filesystem", func(t *testing.T) { fn(t, fsDriver(t)) })
	t.Run("s3", func(t *testing.T) {
		gw := testenv.StartS3(t)
		fn(t, s3test.New(t, gw, gw.NewBucket(t)))
	})
}

func testConfig(d storage.Driver, url string) Config {
	return Config{URLs: []string{url}, Secret: secret, Storage: d, Timeout: 2 * time.Second, Grace: time.Second, UserAgent: "uplink/test",
		Retry: Retry{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}}
}

// run starts n until the test ends (or stop is called).
func run(t *testing.T, n *Notifier) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func published(commit string) ref.Published {
	return ref.Published{App: artifact.App{Org: "acme", Name: "hello"},
		Request: ref.PublishRequest{Commit: commit, Branch: "main", Tags: []string{"v1"}, Message: "fix", Author: "Ann"},
		Build:   ref.Build{Commit: commit, Archs: []string{"x86_64"}, PublishedAt: time.Now().UTC()}, Branch: "main"}
}

func queued(t *testing.T, d storage.Driver) int {
	t.Helper()
	infos, err := d.List(t.Context(), queuePrefix)
	if err != nil {
		t.Fatal(err)
	}
	return len(infos)
}

// TestDeliversInOrderWithRetries: events raised while the receiver
// answers 503 arrive, signed, in the order raised, once it answers again;
// the queue is empty after.
func TestDeliversInOrderWithRetries(t *testing.T) {
	drivers(t, func(t *testing.T, d storage.Driver) {
		r := newReceiver(t)
		r.status.Store(http.StatusServiceUnavailable)
		n, err := New(testConfig(d, r.srv.URL+"/hook"))
		if err != nil {
			t.Fatal(err)
		}
		run(t, n)
		now := time.Now().UTC()
		op := &operation.Operation{ID: "web.1", Kind: operation.KindChangeChannel, Installation: "web", State: operation.Failed,
			To: &operation.Endpoint{Branch: "main", Resolved: "abc"}, Commit: "abc", Error: "verify: no package", StartedAt: &now, FinishedAt: &now}
		n.Published(t.Context(), published("abc"))
		n.OperationStarted(t.Context(), op)
		n.OperationFinished(t.Context(), op)
		for r.tries.Load() < 3 {
			time.Sleep(20 * time.Millisecond)
		}
		if len(r.deliveries()) != 0 || queued(t, d) != 3 {
			t.Fatalf("while down: %d delivered, %d queued", len(r.deliveries()), queued(t, d))
		}
		r.status.Store(http.StatusOK)
		got := r.waitFor(3, 10*time.Second)
		types := []string{got[0].Event.Type, got[1].Event.Type, got[2].Event.Type}
		if strings.Join(types, ",") != "publish,operation.started,operation.finished" {
			t.Fatalf("order: %v", types)
		}
		h := got[0].Header
		if h.Get("Content-Type") != "application/json" || h.Get("User-Agent") != "uplink/test" || h.Get("X-Uplink-Event") != "publish" ||
			h.Get("X-Uplink-Delivery") != got[0].Event.ID || got[0].Event.ID == "" {
			t.Fatalf("headers: %v", h)
		}
		if p := got[0].Event.Publish; p == nil || p.App != "acme/hello" || p.Commit != "abc" || p.Branch != "main" || p.Author != "Ann" ||
			len(p.Tags) != 1 || len(p.Archs) != 1 {
			t.Fatalf("publish event: %s", got[0].Body)
		}
		if o := got[2].Event.Operation; o == nil || o.ID != "web.1" || o.Result != "failed" || o.Error != "verify: no package" ||
			o.To == nil || o.To.Branch != "main" || o.To.Resolved != "abc" || o.From != nil {
			t.Fatalf("finished event: %s", got[2].Body)
		}
		if o := got[1].Event.Operation; o.Result != "" || o.Error != "" {
			t.Fatalf("a started event has no result: %s", got[1].Body)
		}
		eventually(t, func() bool { return queued(t, d) == 0 }, "the queue empties once delivered")
		// Every try is counted: a 2xx as delivered, the 503s as failed.
		failed, delivered := testutil.ToFloat64(n.m.deliveries.WithLabelValues("failed")), testutil.ToFloat64(n.m.deliveries.WithLabelValues("delivered"))
		if delivered != 3 || failed < 2 || failed+delivered != float64(r.tries.Load()) {
			t.Fatalf("counted %v failed and %v delivered of %d tries", failed, delivered, r.tries.Load())
		}
	})
}

// TestTakeover: the events of a replica that stopped (crashed, or
// restarted under a new id) are delivered by another once the grace
// period passed, but not while it still beats.
func TestTakeover(t *testing.T) {
	drivers(t, func(t *testing.T, d storage.Driver) {
		r := newReceiver(t)
		r.mu.Lock()
		r.refuseUA = "a"
		r.mu.Unlock()
		ca, cb := testConfig(d, r.srv.URL), testConfig(d, r.srv.URL)
		ca.UserAgent, cb.UserAgent = "a", "b"
		a, _ := New(ca)
		b, _ := New(cb)
		stopA := run(t, a)
		a.Published(t.Context(), published("one"))
		run(t, b)
		time.Sleep(3 * ca.Grace)
		r.mu.Lock()
		refused := r.refused
		r.mu.Unlock()
		if n := len(r.deliveries()); n != 0 || refused == 0 {
			t.Fatalf("while A beats, B delivered %d of its events (A tried %d times)", n, refused)
		}
		stopA()
		got := r.waitFor(1, 10*time.Second)
		if got[0].Header.Get("User-Agent") != "b" || got[0].Event.Publish.Commit != "one" {
			t.Fatalf("taken over: %v %s", got[0].Header, got[0].Body)
		}
		eventually(t, func() bool { return queued(t, d) == 0 }, "the queue empties")
	})
}

// TestGivesUp: an event undelivered past GiveUp is dropped, logged and
// counted, and leaves the queue.
func TestGivesUp(t *testing.T) {
	d := fsDriver(t)
	r := newReceiver(t)
	r.status.Store(http.StatusInternalServerError)
	cfg := testConfig(d, r.srv.URL)
	cfg.Retry.GiveUp = 300 * time.Millisecond
	n, _ := New(cfg)
	run(t, n)
	n.Published(t.Context(), published("late"))
	eventually(t, func() bool { return testutil.ToFloat64(n.m.deliveries.WithLabelValues("dropped")) == 1 }, "the event is dropped")
	eventually(t, func() bool { return queued(t, d) == 0 }, "a dropped event leaves the queue")
	if r.tries.Load() < 2 {
		t.Fatalf("dropped after %d tries", r.tries.Load())
	}
}

func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEnqueueFailure: when storage refuses the event, Raise returns (the
// publish goes on), and the loss is counted.
func TestEnqueueFailure(t *testing.T) {
	root := filepath.Join(t.TempDir(), "storage")
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	// Storage breaks: its root is now a file, so no object can be written.
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, _ := New(testConfig(d, "http://127.0.0.1:9/hook"))
	done := make(chan struct{})
	go func() { defer close(done); n.Published(t.Context(), published("lost")) }()
	select {
	case <-done:
	case <-time.After(enqueueTimeout + 5*time.Second):
		t.Fatal("Raise blocked on a failing storage")
	}
	if f := testutil.ToFloat64(n.m.enqueueFailures); f != 1 {
		t.Fatalf("enqueue failures counted: %v", f)
	}
}
