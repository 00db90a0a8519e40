package storage

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Instrument returns d counting every call in
// uplink_storage_requests_total{op,result} and timing it in
// uplink_storage_request_duration_seconds{op}. Keys are never used as
// labels. Instrumenting several drivers with one registry is allowed: they
// share the metrics.
//
// Objects returned by Open are d's own, unwrapped, so optional methods such
// as File() *os.File (which the HTTP layer uses for sendfile) still work.
func Instrument(d Driver, reg prometheus.Registerer) Driver {
	m := &instrumented{
		d: d,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_storage_requests_total",
			Help: "Storage driver calls by operation and result.",
		}, []string{"op", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "uplink_storage_request_duration_seconds",
			Help: "Storage driver call latency by operation.",
			// From a local stat to a large upload.
			Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"op"}),
	}
	if reg != nil {
		m.requests = register(reg, m.requests)
		m.duration = register(reg, m.duration)
	}
	// Export zeros, so rates and alerts work before the first error.
	for _, op := range []string{"open", "stat", "put", "list", "delete"} {
		m.duration.WithLabelValues(op)
		for _, result := range []string{"ok", "not_found", "condition_failed", "error"} {
			m.requests.WithLabelValues(op, result)
		}
	}
	return m
}

// register registers c, or returns the equal collector already there.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(err)
}

type instrumented struct {
	d        Driver
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func (m *instrumented) observe(op string, start time.Time, err error) {
	m.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound):
		result = "not_found"
	case errors.Is(err, ErrConditionFailed):
		result = "condition_failed"
	default:
		result = "error"
	}
	m.requests.WithLabelValues(op, result).Inc()
}

func (m *instrumented) Open(ctx context.Context, key string) (obj Object, err error) {
	start := time.Now()
	defer func() { m.observe("open", start, err) }()
	return m.d.Open(ctx, key)
}

func (m *instrumented) Stat(ctx context.Context, key string) (info Info, err error) {
	start := time.Now()
	defer func() { m.observe("stat", start, err) }()
	return m.d.Stat(ctx, key)
}

func (m *instrumented) Put(ctx context.Context, key string, r io.Reader, size int64, cond Condition) (info Info, err error) {
	start := time.Now()
	defer func() { m.observe("put", start, err) }()
	return m.d.Put(ctx, key, r, size, cond)
}

func (m *instrumented) List(ctx context.Context, prefix string) (infos []Info, err error) {
	start := time.Now()
	defer func() { m.observe("list", start, err) }()
	return m.d.List(ctx, prefix)
}

func (m *instrumented) Delete(ctx context.Context, key string) (err error) {
	start := time.Now()
	defer func() { m.observe("delete", start, err) }()
	return m.d.Delete(ctx, key)
}
