package server

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// deadlineDiscard is a ResponseWriter that costs nothing and takes
// deadlines, as net/http's does.
type deadlineDiscard struct{ h http.Header }

func (d *deadlineDiscard) Header() http.Header              { return d.h }
func (d *deadlineDiscard) Write(b []byte) (int, error)      { return len(b), nil }
func (d *deadlineDiscard) WriteHeader(int)                  {}
func (d *deadlineDiscard) SetReadDeadline(time.Time) error  { return nil }
func (d *deadlineDiscard) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkLimitHandler is the listener's per-request wrapper around a
// cached index response (headers shared, as distribution sets them): it
// must add no allocation to the hot path.
func BenchmarkLimitHandler(b *testing.B) {
	body := bytes.Repeat([]byte{0x5a}, 1<<20)
	lm := []string{time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Last-Modified"] = lm
		w.WriteHeader(http.StatusOK)
		w.Write(body)
	})
	h := &limitHandler{next: next, l: listenerLimits{stall: time.Minute, dotSegments: true}}
	req := httptest.NewRequest(http.MethodGet, "/distribution/main/acme/hello/x86_64/APKINDEX.tar.gz", nil)
	w := &deadlineDiscard{h: http.Header{}}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}

func TestParseHTTPDate(t *testing.T) {
	for _, tm := range []time.Time{time.Unix(0, 0), time.Date(2026, 2, 28, 23, 59, 59, 0, time.UTC), time.Date(2099, 12, 1, 1, 2, 3, 0, time.UTC)} {
		got, ok := parseHTTPDate(tm.UTC().Format(http.TimeFormat))
		if !ok || !got.Equal(tm) {
			t.Errorf("%v: %v %v", tm, got, ok)
		}
	}
	for _, s := range []string{"", "Mon, 02 Jan 2006 15:04:05 UTC", "Mon, 02 Foo 2006 15:04:05 GMT", "Mon, 0x Jan 2006 15:04:05 GMT", "Monday, 02-Jan-06 15:04:05 GMT"} {
		if _, ok := parseHTTPDate(s); ok {
			t.Errorf("%q parsed", s)
		}
	}
}
