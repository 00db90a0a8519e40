package console

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
)

func (c *Console) apps(ec echo.Context) error {
	apps, err := c.cfg.Refs.Apps(c.ctx(ec))
	if err != nil {
		return c.failErr(ec, err)
	}
	names := make([]string, 0, len(apps))
	for _, a := range apps {
		names = append(names, a.String())
	}
	return c.render(ec, http.StatusOK, "apps", names)
}

// appParam is the app the path names, which must have builds.
func (c *Console) appParam(ec echo.Context) (artifact.App, error) {
	app := artifact.App{Org: ec.Param("org"), Name: ec.Param("app")}
	if err := app.Validate(); err != nil {
		return app, err
	}
	ok, err := c.cfg.Refs.AppExists(c.ctx(ec), app)
	if err == nil && !ok {
		err = &ref.NotFoundError{What: "app " + app.String()}
	}
	return app, err
}

func (c *Console) app(ec echo.Context) error {
	app, err := c.appParam(ec)
	if err != nil {
		return c.failErr(ec, err)
	}
	refs, err := c.cfg.Refs.Refs(c.ctx(ec), app)
	if err != nil {
		return c.failErr(ec, err)
	}
	none := func(string) bool { return false }
	return c.render(ec, http.StatusOK, "app", refsView{
		App: app.String(), Now: c.cfg.Now(), Branches: refRows(refs.Branches, none), Tags: refRows(refs.Tags, none),
	})
}

func (c *Console) appCommits(ec echo.Context) error {
	app, err := c.appParam(ec)
	if err != nil {
		return c.failErr(ec, err)
	}
	h, err := c.history(c.ctx(ec), app, ec.QueryParam("ref"))
	if err != nil {
		return c.failErr(ec, err)
	}
	h.Action = "/ui/apps/" + app.String() + "/commits"
	return c.render(ec, h.status(), "commits", h)
}
