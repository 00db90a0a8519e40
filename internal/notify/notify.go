// Package notify tells configured HTTP endpoints (webhooks) of publishes
// and of operations starting and ending. Raising an event only writes it
// to a durable queue in storage; a deliverer per endpoint then POSTs the
// queue in order, retrying with backoff, and removes an event only once the
// endpoint answered 2xx: at least once, across restarts and downtime.
package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/storage"
)

// Defaults of Config.
const (
	DefaultTimeout = 10 * time.Second
	// DefaultGrace is how long a replica may go silent before the others
	// take over the events it queued.
	DefaultGrace = 2 * time.Minute
	// enqueueTimeout bounds the one write a publish or an operation
	// waits for.
	enqueueTimeout = 10 * time.Second
	// pageSize is how many events one pass delivers before listing the
	// queue again.
	pageSize = 100
)

// Config wires a Notifier.
type Config struct {
	// URLs receive every event.
	URLs []string
	// Secret, when set, signs each delivery (X-Uplink-Signature).
	Secret string
	// Timeout bounds one POST (DefaultTimeout when 0).
	Timeout time.Duration
	// Grace: the events of a replica silent this long, and queued at
	// least this long ago, are taken over (DefaultGrace when 0).
	Grace time.Duration
	Retry Retry
	// UserAgent of every delivery ("uplink" when empty).
	UserAgent  string
	Storage    storage.Driver
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Notifier queues events and delivers them; it implements the hooks of
// admin (Published) and instance (OperationStarted, OperationFinished).
type Notifier struct {
	cfg     Config
	d       storage.Driver
	log     *slog.Logger
	id      string
	clock   clock
	client  *http.Client
	targets []*deliverer
	m       metrics
}

type metrics struct {
	deliveries      *prometheus.CounterVec
	enqueueFailures prometheus.Counter
}

// New checks cfg's URLs and returns a Notifier; nil when there is none.
func New(cfg Config) (*Notifier, error) {
	if len(cfg.URLs) == 0 {
		return nil, nil
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	cfg.Retry = cfg.Retry.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "uplink"
	}
	raw := make([]byte, 8)
	rand.Read(raw)
	n := &Notifier{cfg: cfg, d: cfg.Storage, log: cfg.Logger, id: hex.EncodeToString(raw),
		// A redirect is not a delivery: a POST would become a GET.
		client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	seen := map[string]bool{}
	for _, raw := range cfg.URLs {
		u, err := parseURL(raw)
		if err != nil {
			return nil, err
		}
		if !seen[raw] {
			seen[raw] = true
			n.targets = append(n.targets, &deliverer{n: n, url: raw, shown: shown(u), prefix: endpointKey(raw), wake: make(chan struct{}, 1)})
		}
	}
	n.m = metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_notify_deliveries_total",
			Help: "Notification delivery attempts: delivered (2xx), failed (retried later), dropped (given up).",
		}, []string{"result"}),
		enqueueFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "uplink_notify_enqueue_failures_total",
			Help: "Events that could not be queued (storage failed): never delivered.",
		}),
	}
	for _, r := range []string{"delivered", "failed", "dropped"} {
		n.m.deliveries.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(n.m.deliveries, n.m.enqueueFailures, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "uplink_notify_queue_length",
			Help: "Events waiting for delivery, over every endpoint, as this replica last saw the queue.",
		}, n.queueLength))
	}
	return n, nil
}

// shown is u without credentials or query, for logs.
func shown(u *url.URL) string { return u.Scheme + "://" + u.Host + u.Path }

func (n *Notifier) queueLength() float64 {
	var sum int64
	for _, t := range n.targets {
		sum += t.queued.Load()
	}
	return float64(sum)
}

// Published queues the event of a completed publish (admin's hook).
func (n *Notifier) Published(ctx context.Context, p ref.Published) { n.Raise(ctx, PublishEvent(p)) }

// OperationStarted queues the event of op starting (instance's hook).
func (n *Notifier) OperationStarted(ctx context.Context, op *operation.Operation) {
	n.Raise(ctx, OperationEvent(op, true))
}

// OperationFinished queues the event of op ending (instance's hook).
func (n *Notifier) OperationFinished(ctx context.Context, op *operation.Operation) {
	n.Raise(ctx, OperationEvent(op, false))
}

// Raise writes ev to every endpoint's queue and returns; a write that
// fails is logged and counted, never returned: a notification does not
// fail what it tells of. A nil Notifier raises nothing.
func (n *Notifier) Raise(ctx context.Context, ev Event) {
	if n == nil { // none configured
		return
	}
	body, err := json.Marshal(ev)
	if err != nil {
		n.log.Error("notify: encoding an event", "type", ev.Type, "err", err)
		return
	}
	// The request may be gone by now; what it did still happened.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), enqueueTimeout)
	defer cancel()
	at := n.clock.next()
	e := entry{Owner: n.id, QueuedAt: at, ID: ev.ID, Type: ev.Type, Event: body}
	b, err := json.Marshal(e)
	if err != nil {
		n.log.Error("notify: encoding an event", "type", ev.Type, "err", err)
		return
	}
	for _, t := range n.targets {
		key := t.prefix + at.Format(stampLayout) + "-" + n.id
		if _, err := n.d.Put(ctx, key, bytes.NewReader(b), int64(len(b)), storage.Condition{IfAbsent: true}); err != nil {
			n.m.enqueueFailures.Inc()
			n.log.Error("notify: could not queue an event; it will not be delivered", "type", ev.Type, "id", ev.ID, "endpoint", t.shown, "err", err)
			continue
		}
		t.queued.Add(1)
		t.signal()
	}
}

// Run delivers until ctx ends: one deliverer per endpoint, and the
// heartbeat that tells the other replicas this one still delivers what
// it queued.
func (n *Notifier) Run(ctx context.Context) {
	if n == nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { n.beat(ctx) })
	for _, t := range n.targets {
		wg.Go(func() { t.run(ctx) })
	}
	wg.Wait()
}

// beat writes the heartbeat every third of the grace period; on the way
// out it removes it, so the others take over without waiting.
func (n *Notifier) beat(ctx context.Context) {
	every := max(n.cfg.Grace/3, 100*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		hb := heartbeat{Replica: n.id, At: time.Now().UTC()}
		if err := storage.WriteJSON(ctx, n.d, replicaKey(n.id), hb, storage.Condition{}); err != nil && ctx.Err() == nil {
			n.log.Warn("notify: heartbeat not written; other replicas may deliver this one's events too", "err", err)
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			n.d.Delete(dctx, replicaKey(n.id))
			return
		case <-t.C:
		}
	}
}

// CheckURL says why raw cannot be a --notify-url, or nil.
func CheckURL(raw string) error {
	_, err := parseURL(raw)
	return err
}

func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--notify-url %q: want http(s)://host[:port]/path", raw)
	}
	return u, nil
}
