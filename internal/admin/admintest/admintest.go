// Package admintest runs the real admin API over in-process storage (the
// filesystem driver in a test's temporary directory), for the tests of
// the API and of its clients.
package admintest

import (
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/internal/admin"
	"github.com/uplinkhq/uplink/storage/filesystem"
)

// Token is the bearer token the API accepts.
const Token = "admintest-token-0123"

// Site is a running admin API.
type Site struct {
	URL string
	// Installations is the service behind the API, for a test to play
	// the engine's part (Update) or to look behind the API.
	Installations *instance.Service
}

// New starts an admin API with no instance backend, no validator and no
// cache; it stops when t ends.
func New(t testing.TB) *Site {
	t.Helper()
	drv, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	refs := ref.NewStore(drv)
	inst := instance.New(instance.Config{Storage: drv, Refs: refs, DistributionURL: "http://uplink:4080"})
	a := admin.New(admin.Config{
		Storage: drv, Refs: refs, Installations: inst, Keys: distribution.NewKeys(drv),
		Tokens: []string{Token}, MaxUpload: 1 << 20, TempDir: t.TempDir(),
		Logger: slog.New(slog.DiscardHandler),
	})
	e := echo.New()
	e.HTTPErrorHandler = a.ErrorHandler
	a.Register(e)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return &Site{URL: srv.URL, Installations: inst}
}
