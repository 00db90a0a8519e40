// The builds of apps: upload, publish, and listing apps, builds and refs.

package admin

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"

	"github.com/labstack/echo/v4"
	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/internal/api"
)

func (a *API) listApps(c echo.Context) error {
	apps, err := a.cfg.Refs.Apps(c.Request().Context())
	if err != nil {
		return err
	}
	out := make([]map[string]string, 0, len(apps))
	for _, app := range apps {
		out = append(out, map[string]string{"org": app.Org, "app": app.Name, "name": app.String()})
	}
	return c.JSON(http.StatusOK, map[string]any{"apps": out})
}

func (a *API) listBuilds(c echo.Context) error {
	app, err := appParam(c)
	if err != nil {
		return err
	}
	branch := c.QueryParam("branch")
	if branch != "" {
		if err := ref.ValidName("branch", branch); err != nil {
			return err
		}
	}
	limit := 100
	if s := c.QueryParam("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			return errorf(http.StatusBadRequest, "invalid", "limit must be an integer from 1 to 10000")
		}
		limit = n
	}
	builds, err := a.cfg.Refs.Builds(c.Request().Context(), app, branch, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, api.Builds{Builds: mapSlice(builds, apiBuild)})
}

func (a *API) listRefs(c echo.Context) error {
	app, err := appParam(c)
	if err != nil {
		return err
	}
	refs, err := a.cfg.Refs.Refs(c.Request().Context(), app)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, apiRefs(refs))
}

func (a *API) publish(c echo.Context) error {
	app, err := appParam(c)
	if err != nil {
		return err
	}
	var req api.PublishRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	build, err := a.builds().Publish(c.Request().Context(), app, domainPublish(req))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, apiBuild(build))
}

// builds is the distribution domain's write side, on this API's storage,
// refs and caches.
func (a *API) builds() *distribution.Builds {
	return &distribution.Builds{Storage: a.cfg.Storage, Refs: a.cfg.Refs, Validator: a.cfg.Validator,
		Spool: a.spoolFile, Cache: a.cfg.Cache, Logger: a.log}
}

// AfterPublish tells the caches and the installations tracking the branch
// of a completed publish, whether its request completed it or a scan did
// after a crash (New makes it cfg.Refs.AfterPublish).
func (a *API) AfterPublish(ctx context.Context, p ref.Published) {
	req := p.Request
	if a.cfg.Cache != nil {
		a.cfg.Cache.Invalidate(ctx, p.App)
		a.cfg.Cache.Prime(ctx, p.App, append([]string{req.Branch}, req.Tags...)...)
	}
	a.log.Info("published", "app", p.App.String(), "commit", p.Build.Commit, "branch", req.Branch, "tags", req.Tags, "recovered", p.Recovered)
	if a.cfg.Events != nil {
		a.cfg.Events.Published(ctx, p)
	}
	if p.Branch != "" && a.cfg.Installations != nil {
		if err := a.cfg.Installations.OnPublish(ctx, p.App, p.Branch, p.Build.Commit); err != nil {
			a.log.Error("publish: could not start upgrades of the installations tracking the branch", "app", p.App.String(), "branch", p.Branch, "err", err)
		}
	}
}

// upload stores one artifact file.
func (a *API) upload(c echo.Context) error {
	app, err := appParam(c)
	if err != nil {
		return err
	}
	body := http.MaxBytesReader(c.Response(), c.Request().Body, a.cfg.MaxUpload)
	f := distribution.ArtifactFile{App: app, Commit: c.Param("commit"), Arch: c.Param("arch"), File: c.Param("file")}
	up, err := a.builds().Upload(c.Request().Context(), f, body)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if up.Created {
		status = http.StatusCreated
	}
	return c.JSON(status, map[string]any{"key": up.Key, "size": up.Size, "sha256": fmt.Sprintf("%x", up.SHA256)})
}

// spoolFile creates an upload's spool file. It is locked while it is
// open, so that the Sweeper removes it only once no live process holds it
// (a crash leaves it behind).
func (a *API) spoolFile() (*os.File, error) {
	tmp, err := os.CreateTemp(a.cfg.TempDir, SpoolPattern)
	if err != nil {
		return nil, err
	}
	if err := lockFile(tmp); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, err
	}
	return tmp, nil
}
