// Package admin is the authenticated JSON API under /api/v1 that CI and
// operators use. This file holds what every route shares: authentication,
// JSON decoding and the error handler; each resource has its own file.
package admin

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/distribution/retention"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/storage"
)

// MaxJSONBody bounds every JSON request body.
const MaxJSONBody = 1 << 20

// Invalidator drops cached pointers of an app after they move, and
// primes the caches with the new values of the refs that moved.
type Invalidator interface {
	Invalidate(ctx context.Context, app artifact.App)
	Prime(ctx context.Context, app artifact.App, refs ...string)
}

// Config wires the API.
type Config struct {
	Storage storage.Driver
	Refs    *ref.Store
	// Cache is told of every pointer move; may be nil.
	Cache Invalidator
	// Installations are upgraded by publishes to the branch they track.
	Installations *instance.Service
	// Keys are the apps' trusted keys and settings.
	Keys *distribution.Keys
	// Validator checks a build before it is published; nil publishes
	// whatever has an index.
	Validator *distribution.Validator
	// Tokens are the accepted bearer tokens.
	Tokens []string
	// MaxUpload bounds one uploaded artifact file.
	MaxUpload int64
	// Retention deletes builds and prunes apps; nil: one with the
	// default policy, on this Config's refs, keys and installations.
	Retention *retention.Pruner
	// TempDir spools uploads (os.TempDir() when empty).
	TempDir string
	Logger  *slog.Logger
	// Events hears of every completed publish (notify queues it for
	// webhooks); may be nil. It must return quickly.
	Events PublishEvents
}

// PublishEvents is told of completed publishes.
type PublishEvents interface {
	Published(ctx context.Context, p ref.Published)
}

// API serves /api/v1.
type API struct {
	cfg Config
	log *slog.Logger
}

// New returns the API, and makes it cfg.Refs's AfterPublish hook.
func New(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &API{cfg: cfg, log: cfg.Logger}
	if cfg.Refs != nil {
		cfg.Refs.AfterPublish = a.AfterPublish
	}
	return a
}

// Register mounts the API on e.
func (a *API) Register(e *echo.Echo) {
	g := e.Group("/api/v1", a.authenticate)
	for _, r := range a.routes() {
		g.Add(r.method, r.path, r.handler)
	}
	g.Any("/*", func(echo.Context) error { return errorf(http.StatusNotFound, "not_found", "no such endpoint") })
}

type route struct {
	method, path string
	handler      echo.HandlerFunc
}

// routes is every endpoint of the API, below /api/v1 (openapi.json
// describes each, TestOpenAPIMatchesRoutes checks it).
func (a *API) routes() []route {
	rs := []route{
		{http.MethodGet, "/openapi.json", a.openAPI},
		{http.MethodGet, "/apps", a.listApps},
		{http.MethodPut, "/apps/:org/:app/builds/:commit/:arch/:file", a.upload},
		{http.MethodPost, "/apps/:org/:app/builds", a.publish},
		{http.MethodGet, "/apps/:org/:app/builds", a.listBuilds},
		{http.MethodGet, "/apps/:org/:app/refs", a.listRefs},
		{http.MethodDelete, "/apps/:org/:app/builds/:commit", a.deleteBuild},
		{http.MethodDelete, "/apps/:org/:app/branches/:branch", a.deleteBranch},
		{http.MethodPut, "/apps/:org/:app/tags/:tag", a.putTag},
		{http.MethodDelete, "/apps/:org/:app/tags/:tag", a.deleteTag},
		{http.MethodPost, "/apps/:org/:app/prune", a.prune},

		{http.MethodGet, "/installations", a.listInstallations},
		{http.MethodGet, "/installations/:name", a.getInstallation},
		{http.MethodPut, "/installations/:name", a.putInstallation},
		{http.MethodDelete, "/installations/:name", a.deleteInstallation},
		{http.MethodPut, "/installations/:name/channel", a.setChannel},
		{http.MethodGet, "/installations/:name/history", a.history},
		{http.MethodGet, "/operations", a.listOperations},
		{http.MethodGet, "/operations/:id", a.getOperation},
		{http.MethodGet, "/operations/:id/events", a.operationEvents},
	}
	if a.cfg.Keys != nil {
		rs = append(rs,
			route{http.MethodGet, "/apps/:org/:app", a.getApp},
			route{http.MethodPatch, "/apps/:org/:app", a.patchApp},
			route{http.MethodGet, "/apps/:org/:app/keys", a.listKeys},
			route{http.MethodPut, "/apps/:org/:app/keys/:name", a.putKey},
			route{http.MethodDelete, "/apps/:org/:app/keys/:name", a.deleteKey},
		)
	}
	return rs
}

// ErrorHandler writes every error of the admin listener in API.md's shape.
func (a *API) ErrorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	e := toError(err)
	if e.Status >= 500 {
		a.log.Error("admin: request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
	}
	if e.Status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="uplink"`)
	}
	if e.Status == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", "5")
	}
	_ = c.JSON(e.Status, api.ErrorBody{Error: e.Body})
}

func (a *API) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		scheme, token, _ := strings.Cut(c.Request().Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || !a.validToken(token) {
			return errorf(http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token")
		}
		return next(c)
	}
}

func (a *API) validToken(token string) bool {
	ok := 0
	for _, t := range a.cfg.Tokens {
		// Every token is compared in full so timing says nothing.
		ok |= subtle.ConstantTimeCompare([]byte(token), []byte(t))
	}
	return ok == 1 && token != ""
}

var errBadJSON = errors.New("bad JSON")

// decode reads one JSON object strictly: bounded, no unknown fields, no
// trailing data.
func decode(c echo.Context, v any) error {
	body, err := readBody(c, MaxJSONBody)
	if err != nil {
		return err
	}
	// encoding/json would turn invalid bytes into U+FFFD, and a branch
	// named with them would be stored under another name than sent.
	if !utf8.Valid(body) {
		return fmt.Errorf("%w: the body is not valid UTF-8, as JSON must be", errBadJSON)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: empty body", errBadJSON)
		}
		return fmt.Errorf("%w: %s", errBadJSON, err.Error())
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) { // dec.More() misses a trailing "}" or "]"
		return fmt.Errorf("%w: trailing data after the object", errBadJSON)
	}
	return nil
}

// readBody reads the whole body, at most limit bytes (a
// *http.MaxBytesError beyond: 413).
func readBody(c echo.Context, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err
		}
		return nil, errorf(http.StatusBadRequest, "bad_body", "reading the request body: %v", err)
	}
	return body, nil
}

func appParam(c echo.Context) (artifact.App, error) {
	app := artifact.App{Org: c.Param("org"), Name: c.Param("app")}
	return app, app.Validate()
}
