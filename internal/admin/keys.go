package admin

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
)

// AppView is an app's settings as the API shows them.
type AppView struct {
	App           string                 `json:"app"`
	AllowUnsigned bool                   `json:"allow_unsigned"`
	Keys          []distribution.KeyInfo `json:"keys"`
}

// AppPatch changes an app's settings; absent fields stay.
type AppPatch struct {
	AllowUnsigned *bool `json:"allow_unsigned"`
}

func (a *API) registerKeys(g *echo.Group) {
	if a.cfg.Keys == nil {
		return
	}
	g.GET("/apps/:org/:app", a.getApp)
	g.PATCH("/apps/:org/:app", a.patchApp)
	g.GET("/apps/:org/:app/keys", a.listKeys)
	g.PUT("/apps/:org/:app/keys/:name", a.putKey)
	g.DELETE("/apps/:org/:app/keys/:name", a.deleteKey)
}

func appView(app artifact.App, s distribution.AppSettings) AppView {
	return AppView{App: app.String(), AllowUnsigned: s.AllowUnsigned, Keys: s.Infos()}
}

// keyParam is the key name of the request. Echo's c.Param is the escaped
// segment when the path had escapes ("%40" for '@') and the decoded one
// otherwise, so the name is taken from the escaped path and unescaped
// once, here.
func keyParam(c echo.Context) (string, error) {
	p := c.Request().URL.EscapedPath()
	seg := p[strings.LastIndexByte(p, '/')+1:]
	name, err := url.PathUnescape(seg)
	if err != nil {
		return "", errorf(http.StatusBadRequest, "invalid", "key name %q: bad percent-encoding", seg)
	}
	return name, distribution.ValidKeyName("key name", name)
}

func (a *API) getApp(c echo.Context) error {
	app, err := appParam(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	s, found, err := a.cfg.Keys.Settings(ctx, app)
	if err != nil {
		return err
	}
	if !found {
		// Settings and keys may come before the first build; an app
		// with neither nor a build does not exist.
		ok, err := a.cfg.Refs.AppExists(ctx, app)
		if err != nil {
			return err
		}
		if !ok {
			return errorf(http.StatusNotFound, "not_found", "app %s not found: nothing is published, registered or set for it", app)
		}
	}
	return c.JSON(http.StatusOK, appView(app, s))
}

func (a *API) patchApp(c echo.Context) error {
	app, err := appParam(c)
	if err != nil {
		return err
	}
	var p AppPatch
	if err := decode(c, &p); err != nil {
		return err
	}
	if p.AllowUnsigned == nil {
		return errorf(http.StatusBadRequest, "invalid", `nothing to change: give {"allow_unsigned": true|false}`)
	}
	s, err := a.cfg.Keys.SetAllowUnsigned(c.Request().Context(), app, *p.AllowUnsigned)
	if err != nil {
		return err
	}
	a.log.Info("app settings changed", "app", app.String(), "allow_unsigned", s.AllowUnsigned)
	return c.JSON(http.StatusOK, appView(app, s))
}

func (a *API) listKeys(c echo.Context) error {
	app, err := appParam(c)
	if err != nil {
		return err
	}
	s, _, err := a.cfg.Keys.Settings(c.Request().Context(), app)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"keys": s.Infos()})
}

func (a *API) putKey(c echo.Context) error {
	app, err := appParam(c)
	if err != nil {
		return err
	}
	name, err := keyParam(c)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, distribution.MaxKeySize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errorf(http.StatusBadRequest, "bad_body", "reading the request body: %v", err)
	}
	info, created, err := a.cfg.Keys.Put(c.Request().Context(), app, name, body)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		a.log.Info("key registered", "app", app.String(), "key", name, "fingerprint", info.Fingerprint)
	}
	return c.JSON(status, info)
}

func (a *API) deleteKey(c echo.Context) error {
	app, err := appParam(c)
	if err != nil {
		return err
	}
	name, err := keyParam(c)
	if err != nil {
		return err
	}
	if err := a.cfg.Keys.Delete(c.Request().Context(), app, name); err != nil {
		return err
	}
	a.log.Info("key removed", "app", app.String(), "key", name)
	return c.NoContent(http.StatusNoContent)
}
