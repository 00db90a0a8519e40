package distribution_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
)

// Authorize refuses with 403, and a failing check answers 503 (never 500,
// never a silent pass).
func TestAuthorize(t *testing.T) {
	var seen netip.Addr
	var seenApp artifact.App
	verdict := error(nil)
	e, path := setup(t, 1024, func(_ context.Context, app artifact.App, a netip.Addr) error {
		seen, seenApp = a, app
		return verdict
	})
	for _, tc := range []struct {
		verdict error
		status  int
	}{
		{nil, http.StatusOK},
		{distribution.ErrForbidden, http.StatusForbidden},
		{errors.New("incus unreachable"), http.StatusServiceUnavailable},
	} {
		verdict = tc.verdict
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = "10.1.2.3:5555"
		w := httptest.NewRecorder()
		e.ServeHTTP(w, req)
		if w.Code != tc.status || seen != netip.MustParseAddr("10.1.2.3") || seenApp.String() != "acme/hello" {
			t.Errorf("verdict %v: status %d (client %v, app %v), want %d", tc.verdict, w.Code, seen, seenApp, tc.status)
		}
		if tc.status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
	}
}
