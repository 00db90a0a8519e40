// The builds of apps: upload, publish, and listing apps, builds and refs.

package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"

	"github.com/labstack/echo/v4"
	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
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
	return c.JSON(http.StatusOK, map[string]any{"builds": builds})
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
	return c.JSON(http.StatusOK, refs)
}

func (a *API) publish(c echo.Context) error {
	app, err := appParam(c)
	if err != nil {
		return err
	}
	var req ref.PublishRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := a.validate(ctx, app, req); err != nil {
		return err
	}
	// Answered 201 only once every write is done and AfterPublish ran;
	// a failure leaves the intent for the retry or a replica's scan.
	build, err := a.cfg.Refs.Publish(ctx, app, req)
	if err != nil {
		if a.cfg.Cache != nil {
			// A failed publish may have moved a pointer before failing.
			a.cfg.Cache.Invalidate(ctx, app)
		}
		return err
	}
	return c.JSON(http.StatusCreated, build)
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
	if p.Branch != "" && a.cfg.Installations != nil {
		if err := a.cfg.Installations.OnPublish(ctx, p.App, p.Branch, p.Build.Commit); err != nil {
			a.log.Error("publish: could not start upgrades of the installations tracking the branch", "app", p.App.String(), "branch", p.Branch, "err", err)
		}
	}
}

// validate refuses a build that apk could not install from, before
// anything moves. Until a publish succeeds the commit has no build record,
// so its files stay replaceable (see upload).
func (a *API) validate(ctx context.Context, app artifact.App, req ref.PublishRequest) error {
	if a.cfg.Validator == nil {
		return nil
	}
	commit, err := artifact.ParseCommit(req.Commit)
	if err != nil {
		return err
	}
	// Cheap checks of the request first, so a typo costs no package reads.
	if req.Branch != "" {
		if err := ref.ValidName("branch", req.Branch); err != nil {
			return err
		}
	}
	for _, t := range req.Tags {
		if err := ref.ValidName("tag", t); err != nil {
			return err
		}
	}
	// A published build is immutable and was checked when it was first
	// published: publishing it again (another branch, a tag, a move back)
	// only moves pointers.
	_, err = a.cfg.Refs.Build(ctx, app, commit)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ref.ErrNotFound) {
		return err
	}
	archs, err := a.cfg.Refs.Archs(ctx, app, commit)
	if err != nil {
		return err
	}
	if len(archs) == 0 {
		return &ref.MissingIndexError{Prefix: artifact.CommitPrefix(app, commit)}
	}
	err = a.cfg.Validator.Validate(ctx, app, commit, archs)
	var ve *distribution.ValidationError
	if errors.As(err, &ve) {
		a.log.Info("publish refused", "app", app.String(), "commit", commit, "code", ve.Code, "problems", len(ve.Problems)+ve.Omitted)
	}
	return err
}

// upload stores one artifact file. Bytes under a published commit never
// change: the same bytes again are a no-op, anything else a 409.
func (a *API) upload(c echo.Context) error {
	app, err := appParam(c)
	if err != nil {
		return err
	}
	commit, err := artifact.ParseCommit(c.Param("commit"))
	if err != nil {
		return err
	}
	arch, file := c.Param("arch"), c.Param("file")
	if err := artifact.ValidName("arch", arch); err != nil {
		return err
	}
	if err := artifact.ValidFile(file); err != nil {
		return err
	}
	ctx := c.Request().Context()
	key := artifact.Key(app, commit, arch, file)

	tmp, sum, size, err := a.spool(c)
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	// Checked after the (possibly long) upload, so that the window in
	// which a racing publish could be missed is only the write below.
	_, err = a.cfg.Refs.Build(ctx, app, commit)
	published := err == nil
	if err != nil && !errors.Is(err, ref.ErrNotFound) {
		return err
	}
	if !published {
		// An interrupted publish will be completed with these files.
		if published, err = a.cfg.Refs.Publishing(ctx, app, commit); err != nil {
			return err
		}
	}

	existing, err := a.sha256(ctx, key)
	switch {
	case err == nil && bytes.Equal(existing, sum):
		return c.JSON(http.StatusOK, uploaded(key, size, sum))
	case err == nil && published, storage.IsNotFound(err) && published:
		return errorf(http.StatusConflict, "immutable", "commit %s of %s is published: its artifacts never change", commit, app)
	case err != nil && !storage.IsNotFound(err):
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := a.cfg.Storage.Put(ctx, key, tmp, size, storage.Condition{}); err != nil {
		return err
	}
	status := http.StatusCreated
	if existing != nil {
		status = http.StatusOK
	}
	return c.JSON(status, uploaded(key, size, sum))
}

func uploaded(key string, size int64, sum []byte) map[string]any {
	return map[string]any{"key": key, "size": size, "sha256": fmt.Sprintf("%x", sum)}
}

// spool copies the body to a temporary file, so that it can be compared
// and then stored with a known size without holding it in memory. The
// file is locked while it is open, so that the Sweeper removes it only
// once no live process holds it (a crash leaves it behind).
func (a *API) spool(c echo.Context) (*os.File, []byte, int64, error) {
	tmp, err := os.CreateTemp(a.cfg.TempDir, SpoolPattern)
	if err != nil {
		return nil, nil, 0, err
	}
	if err := lockFile(tmp); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, nil, 0, err
	}
	h := sha256.New()
	body := http.MaxBytesReader(c.Response(), c.Request().Body, a.cfg.MaxUpload)
	n, err := io.Copy(io.MultiWriter(tmp, h), body)
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, nil, 0, err
		}
		return nil, nil, 0, errorf(http.StatusBadRequest, "bad_body", "reading the request body: %v", err)
	}
	return tmp, h.Sum(nil), n, nil
}

func (a *API) sha256(ctx context.Context, key string) ([]byte, error) {
	obj, err := a.cfg.Storage.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	h := sha256.New()
	if _, err := io.Copy(h, obj); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
