package distribution_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/uplinkhq/uplink/distribution/artifact"
)

type verdict int

const (
	allow verdict = iota
	refuse
	undecided
)

// authorizer answers its verdict and remembers what it was asked.
type authorizer struct {
	verdict verdict
	app     artifact.App
	client  netip.Addr
}

func (a *authorizer) Allowed(_ context.Context, app artifact.App, client netip.Addr) (bool, error) {
	a.app, a.client = app, client
	switch a.verdict {
	case refuse:
		return false, nil
	case undecided:
		return false, errors.New("incus unreachable")
	}
	return true, nil
}

// A refusal is 403, and a failing check answers 503 (never 500, never a
// silent pass).
func TestAuthorize(t *testing.T) {
	auth := &authorizer{}
	e, path := setup(t, 1024, auth)
	for _, tc := range []struct {
		verdict verdict
		status  int
	}{
		{allow, http.StatusOK},
		{refuse, http.StatusForbidden},
		{undecided, http.StatusServiceUnavailable},
	} {
		auth.verdict = tc.verdict
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = "10.1.2.3:5555"
		w := httptest.NewRecorder()
		e.ServeHTTP(w, req)
		if w.Code != tc.status || auth.client != netip.MustParseAddr("10.1.2.3") || auth.app.String() != "acme/hello" {
			t.Errorf("verdict %v: status %d (client %v, app %v), want %d", tc.verdict, w.Code, auth.client, auth.app, tc.status)
		}
		if tc.status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
	}
}
