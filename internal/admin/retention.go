// Retention: deleting branches, tags and builds, setting a tag, an app's
// policy, and pruning on request.

package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/distribution/retention"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/api"
)

// Usage is what installations use of an app's builds and refs, for the
// retention.Pruner.
func Usage(s *instance.Service) retention.Installations { return installationUsage{s} }

type installationUsage struct{ s *instance.Service }

// Usage implements retention.Installations.
func (u installationUsage) Usage(ctx context.Context, app artifact.App, keepOps int) (retention.Usage, error) {
	out := retention.NewUsage()
	if u.s == nil {
		return out, nil
	}
	views, err := u.s.List(ctx)
	if err != nil {
		return out, err
	}
	for _, v := range views {
		if v.App != app.String() {
			continue
		}
		who := "installation " + v.Name
		ch := v.Channel
		retention.Add(out.Branches, ch.Branch, who)
		retention.Add(out.Tags, ch.Tag, who)
		retention.Add(out.Commits, ch.Commit, who+" (pinned)")
		retention.Add(out.Commits, v.ResolvedCommit, who+" (runs it)")
		for _, in := range v.Observed {
			retention.Add(out.Commits, in.Commit, who+" (instance "+in.Name+" runs it)")
		}
		if v.Pending != nil {
			retention.Add(out.Commits, v.Pending.Commit, who+" (operation "+v.Pending.Operation+")")
		}
		if keepOps == 0 {
			continue // the unfinished one is Pending
		}
		ops, err := u.s.Operations(ctx, v.Name)
		if err != nil {
			return out, err
		}
		for i, op := range ops {
			if i >= keepOps && op.State.Done() {
				continue
			}
			by := who + " (operation " + op.ID + ")"
			retention.Add(out.Commits, op.Commit, by)
			for _, e := range []*operation.Endpoint{op.From, op.To} {
				if e != nil {
					retention.Add(out.Commits, e.Resolved, by)
				}
			}
		}
	}
	return out, nil
}

// retention is the configured pruner, or one with the default policy.
func (a *API) retention() *retention.Pruner {
	if a.cfg.Retention != nil {
		return a.cfg.Retention
	}
	return &retention.Pruner{Refs: a.cfg.Refs, Installations: Usage(a.cfg.Installations), Keys: a.cfg.Keys,
		Default: retention.Default, Cache: a.cfg.Cache, Storage: a.cfg.Storage, Logger: a.log}
}

// refParams are the app and the last path segment, unescaped once. Echo's
// c.Param is the escaped segment when the path had escapes ("%2F" for
// '/' in a branch name) and the decoded one otherwise, so the name is
// taken from the escaped path.
func refParams(c echo.Context, what string) (artifact.App, string, error) {
	app, err := appParam(c)
	if err != nil {
		return app, "", err
	}
	p := c.Request().URL.EscapedPath()
	seg := p[strings.LastIndexByte(p, '/')+1:]
	name, err := url.PathUnescape(seg)
	if err != nil {
		return app, "", errorf(http.StatusBadRequest, api.CodeInvalid, "%s %q: bad percent-encoding", what, seg)
	}
	return app, name, nil
}

// refUsers is what the installations make of a branch or a tag.
func (a *API) refUsers(ctx context.Context, app artifact.App, kind, name string) error {
	u, err := a.retention().Installations.Usage(ctx, app, 0)
	if err != nil {
		return err
	}
	users := u.Branches[name]
	if kind == "tag" {
		users = u.Tags[name]
	}
	if len(users) > 0 {
		return &ref.InUseError{What: kind + " " + name + " of " + app.String(), Users: users}
	}
	return nil
}

func (a *API) deleteBranch(c echo.Context) error {
	return a.deleteRef(c, "branch", a.cfg.Refs.DeleteBranch)
}

func (a *API) deleteTag(c echo.Context) error {
	return a.deleteRef(c, "tag", a.cfg.Refs.DeleteTag)
}

func (a *API) deleteRef(c echo.Context, kind string, del func(context.Context, artifact.App, string) error) error {
	app, name, err := refParams(c, kind)
	if err != nil {
		return err
	}
	if err := ref.ValidName(kind, name); err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := a.refUsers(ctx, app, kind, name); err != nil {
		return err
	}
	if err := del(ctx, app, name); err != nil {
		return err
	}
	a.invalidate(ctx, app)
	a.log.Info(kind+" deleted", "app", app.String(), kind, name)
	return c.NoContent(http.StatusNoContent)
}

func (a *API) invalidate(ctx context.Context, app artifact.App) {
	if a.cfg.Cache != nil {
		a.cfg.Cache.Invalidate(ctx, app)
	}
}

func (a *API) putTag(c echo.Context) error {
	app, name, err := refParams(c, "tag")
	if err != nil {
		return err
	}
	var req api.SetTagRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	t, created, err := a.cfg.Refs.SetTag(ctx, app, name, req.Commit)
	if err != nil {
		return err
	}
	a.invalidate(ctx, app)
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	a.log.Info("tag set", "app", app.String(), "tag", name, "commit", t.Commit)
	return c.JSON(status, api.Pointer{Commit: t.Commit, UpdatedAt: t.UpdatedAt})
}

func (a *API) deleteBuild(c echo.Context) error {
	app, sha, err := refParams(c, "commit")
	if err != nil {
		return err
	}
	if _, err := a.retention().DeleteBuild(c.Request().Context(), app, sha); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (a *API) prune(c echo.Context) error {
	app, err := appParam(c)
	if err != nil {
		return err
	}
	var req api.PruneRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	rep, err := a.retention().Prune(c.Request().Context(), app, req.DryRun)
	if err != nil {
		return err
	}
	out := api.PruneReport{DryRun: rep.DryRun, Kept: rep.Kept, Bytes: rep.Bytes, Deleted: mapSlice(rep.Deleted, func(p retention.Pruned) api.PrunedBuild {
		return api.PrunedBuild{Commit: p.Build.Commit, Branch: p.Build.Branch, PublishedAt: p.Build.PublishedAt, Bytes: p.Bytes, Reason: p.Reason}
	})}
	return c.JSON(http.StatusOK, out)
}

// inUseDetail names every user of what a 409 in_use refused to delete.
func inUseDetail(matched error, e *api.Error) {
	e.UsedBy = matched.(*ref.InUseError).Users
}

// Bounds of an app's own policy.
const (
	maxKeepBuilds     = 1_000_000
	maxKeepOperations = 1000
)

// domainRetention checks a policy as PATCH sends it.
func domainRetention(r api.Retention) (distribution.RetentionSettings, error) {
	var out distribution.RetentionSettings
	if n := r.KeepBuilds; n != nil && (*n < 0 || *n > maxKeepBuilds) {
		return out, errorf(http.StatusBadRequest, api.CodeInvalid, "retention.keep_builds must be from 0 to %d", maxKeepBuilds)
	}
	if n := r.KeepOperations; n != nil && (*n < 0 || *n > maxKeepOperations) {
		return out, errorf(http.StatusBadRequest, api.CodeInvalid, "retention.keep_operations must be from 0 to %d", maxKeepOperations)
	}
	out.KeepBuilds, out.KeepOperations = r.KeepBuilds, r.KeepOperations
	if r.KeepAge != "" {
		d, err := time.ParseDuration(r.KeepAge)
		if err != nil || d < 0 {
			return out, errorf(http.StatusBadRequest, api.CodeInvalid, "retention.keep_age %q: want a duration such as \"720h\"", r.KeepAge)
		}
		out.KeepAge = &d
	}
	return out, nil
}

func apiRetention(r distribution.RetentionSettings) api.Retention {
	out := api.Retention{KeepBuilds: r.KeepBuilds, KeepOperations: r.KeepOperations}
	if r.KeepAge != nil {
		out.KeepAge = r.KeepAge.String()
	}
	return out
}

// setRetention applies PATCH's retention, when it has one.
func (a *API) setRetention(ctx context.Context, app artifact.App, r *api.Retention) error {
	if r == nil {
		return nil
	}
	rs, err := domainRetention(*r)
	if err != nil {
		return err
	}
	s, err := a.cfg.Keys.SetRetention(ctx, app, rs)
	if err != nil {
		return err
	}
	a.log.Info("app retention changed", "app", app.String(), "retention", fmt.Sprintf("%+v", apiRetention(s.Retention)))
	return nil
}
