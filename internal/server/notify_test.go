package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/notify"
	"github.com/uplinkhq/uplink/internal/server"
)

const notifySecret = "webhook-secret-0123456789"

// hookReceiver is a CI job's or chat bridge's webhook endpoint: it
// verifies each delivery's HMAC and collects the events; while down it
// answers 503.
type hookReceiver struct {
	t    *testing.T
	url  string
	down atomic.Bool
	mu   sync.Mutex
	byID map[string]notify.Event
	ids  []string // in arrival order, duplicates included
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{t: t, byID: map[string]notify.Event{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if h.down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if !notify.Verify([]byte(notifySecret), body, r.Header.Get("X-Uplink-Signature")) {
			t.Errorf("delivery %s: signature %q does not verify", r.Header.Get("X-Uplink-Delivery"), r.Header.Get("X-Uplink-Signature"))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var ev notify.Event
		if err := json.Unmarshal(body, &ev); err != nil || ev.ID != r.Header.Get("X-Uplink-Delivery") || ev.Type != r.Header.Get("X-Uplink-Event") {
			t.Errorf("delivery headers %v do not match its body %s (%v)", r.Header, body, err)
		}
		h.mu.Lock()
		h.byID[ev.ID] = ev
		h.ids = append(h.ids, ev.ID)
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL + "/uplink"
	return h
}

// find returns the events of type typ for which match holds.
func (h *hookReceiver) find(typ string, match func(notify.Event) bool) []notify.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []notify.Event
	for _, ev := range h.byID {
		if ev.Type == typ && match(ev) {
			out = append(out, ev)
		}
	}
	return out
}

func (h *hookReceiver) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byID)
}

func (h *hookReceiver) published(commit string) bool {
	return len(h.find(notify.TypePublish, func(ev notify.Event) bool { return ev.Publish.Commit == commit })) > 0
}

// operation returns the operation event of type typ about id, or nil.
func (h *hookReceiver) operation(typ, id string) *notify.Operation {
	evs := h.find(typ, func(ev notify.Event) bool { return ev.Operation.ID == id })
	if len(evs) == 0 {
		return nil
	}
	return evs[0].Operation
}

func notifyConfig(cfg server.Config, url string) server.Config {
	cfg = opsConfig(cfg)
	cfg.NotifyURLs, cfg.NotifySecret, cfg.NotifyTimeout = []string{url}, notifySecret, 2*time.Second
	cfg.NotifyGrace = time.Second
	cfg.NotifyRetry = notify.Retry{Initial: 100 * time.Millisecond, Max: 300 * time.Millisecond}
	return cfg
}

// TestNotifications: a webhook receiver hears, signed, of every publish
// and every operation start and end; what happens while it is down
// reaches it once it is back, and what was queued before uplink
// restarted reaches it after the restart.
func TestNotifications(t *testing.T) {
	drivers(t, func(t *testing.T, cfg server.Config) {
		h := newHookReceiver(t)
		cfg = notifyConfig(cfg, h.url)
		n := start(t, cfg)
		key := apktest.NewKey(t)
		a, b, c := commitOf("A"), commitOf("B"), commitOf("C")

		// Receiver up: a publish, then an installation's bootstrap.
		n.publish(t, a, "main", hello(t, key, "1.0-r0", "A"), "v1")
		eventually(t, 10*time.Second, "the publish event arrives", func() bool { return h.published(a) })
		ev := h.find(notify.TypePublish, func(ev notify.Event) bool { return ev.Publish.Commit == a })[0]
		if p := ev.Publish; p.App != testApp || p.Branch != "main" || len(p.Tags) != 1 || p.Tags[0] != "v1" ||
			len(p.Archs) != 1 || p.Archs[0] != apktest.DefaultArch || p.Message != "commit "+a[:7] || ev.At.IsZero() {
			t.Fatalf("publish event: %+v %+v", ev, p)
		}
		v := putInstallation(t, n, "web", webSpec(key, instance.Channel{Branch: "main"}))
		boot := v.LastOperation.ID
		eventually(t, 10*time.Second, "the bootstrap's start and end arrive", func() bool {
			return h.operation(notify.TypeOperationStarted, boot) != nil && h.operation(notify.TypeOperationFinished, boot) != nil
		})
		if o := h.operation(notify.TypeOperationFinished, boot); o.Kind != "change-channel" || o.Installation != "web" ||
			o.Result != "succeeded" || o.Error != "" || o.To == nil || o.To.Branch != "main" || o.To.Resolved != a || o.Commit != a || o.From != nil {
			t.Fatalf("bootstrap finished: %+v", o)
		}

		// Receiver down: a publish upgrades the installation; nothing of
		// it arrives until the receiver is back, then all of it does.
		h.down.Store(true)
		before := h.count()
		n.publish(t, b, "main", hello(t, key, "2.0-r0", "B"))
		up := waitUpgrade(t, n, "web", b)
		time.Sleep(500 * time.Millisecond) // a few failed tries
		if h.count() != before {
			t.Fatalf("events arrived while the receiver was down")
		}
		if f := metric(t, n, `uplink_notify_deliveries_total{result="failed"}`); f < 1 {
			t.Fatalf("failed deliveries while down: %v", f)
		}
		h.down.Store(false)
		eventually(t, 10*time.Second, "what happened while down arrives", func() bool {
			return h.published(b) && h.operation(notify.TypeOperationStarted, up) != nil && h.operation(notify.TypeOperationFinished, up) != nil
		})
		if o := h.operation(notify.TypeOperationFinished, up); o.Kind != "upgrade" || o.From == nil || o.From.Resolved != a || o.To.Resolved != b || o.Result != "succeeded" {
			t.Fatalf("upgrade finished: %+v", o)
		}

		// Receiver down across a restart of uplink on the same storage.
		h.down.Store(true)
		n.publish(t, c, "main", hello(t, key, "3.0-r0", "C"))
		up = waitUpgrade(t, n, "web", c)
		n.cancel()
		h.down.Store(false)
		if h.published(c) {
			t.Fatal("the publish arrived while the receiver was down")
		}
		n = start(t, cfg)
		eventually(t, 20*time.Second, "events queued before the restart arrive after it", func() bool {
			return h.published(c) && h.operation(notify.TypeOperationFinished, up) != nil
		})
		eventually(t, 5*time.Second, "the queue empties", func() bool {
			return metric(t, n, "uplink_notify_queue_length") == 0
		})
		if d := metric(t, n, `uplink_notify_deliveries_total{result="delivered"}`); d < 3 {
			t.Fatalf("delivered after the restart: %v", d)
		}
	})
}

// waitUpgrade waits for the upgrade of installation name to commit to end
// and returns its id.
func waitUpgrade(t *testing.T, n *node, name, commit string) string {
	t.Helper()
	var id string
	eventually(t, 10*time.Second, "an upgrade to "+commit[:7], func() bool {
		ops := operations(t, n, name)
		if len(ops) > 0 && ops[0].Kind == "upgrade" && ops[0].Commit == commit {
			id = ops[0].ID
		}
		return id != ""
	})
	waitOp(t, n, id, 10*time.Second)
	return id
}
