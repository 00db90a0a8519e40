package admin

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/internal/api"
)

// keyParams are the app and the key name of the request. Echo's c.Param
// is the escaped segment when the path had escapes ("%40" for '@') and
// the decoded one otherwise, so the name is taken from the escaped path
// and unescaped once, here.
func keyParams(c echo.Context) (artifact.App, string, error) {
	app, name, err := refParams(c, "key name")
	if err != nil {
		return app, "", err
	}
	return app, name, distribution.ValidKeyName("key name", name)
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
	return c.JSON(http.StatusOK, apiApp(app, s))
}

func (a *API) patchApp(c echo.Context) error {
	app, err := appParam(c)
	if err != nil {
		return err
	}
	var p api.AppPatch
	if err := decode(c, &p); err != nil {
		return err
	}
	if p.AllowUnsigned == nil && p.Retention == nil {
		return errorf(http.StatusBadRequest, "invalid", `nothing to change: give {"allow_unsigned": true|false} or {"retention": {...}}`)
	}
	if err := a.setRetention(c.Request().Context(), app, p.Retention); err != nil {
		return err
	}
	if p.AllowUnsigned == nil {
		return a.getApp(c)
	}
	s, err := a.cfg.Keys.SetAllowUnsigned(c.Request().Context(), app, *p.AllowUnsigned)
	if err != nil {
		return err
	}
	a.log.Info("app settings changed", "app", app.String(), "allow_unsigned", s.AllowUnsigned)
	return c.JSON(http.StatusOK, apiApp(app, s))
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
	return c.JSON(http.StatusOK, api.Keys{Keys: mapSlice(s.Infos(), apiKey)})
}

func (a *API) putKey(c echo.Context) error {
	app, name, err := keyParams(c)
	if err != nil {
		return err
	}
	body, err := readBody(c, distribution.MaxKeySize)
	if err != nil {
		return err
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
	return c.JSON(status, apiKey(info))
}

func (a *API) deleteKey(c echo.Context) error {
	app, name, err := keyParams(c)
	if err != nil {
		return err
	}
	if err := a.cfg.Keys.Delete(c.Request().Context(), app, name); err != nil {
		return err
	}
	a.log.Info("key removed", "app", app.String(), "key", name)
	return c.NoContent(http.StatusNoContent)
}
