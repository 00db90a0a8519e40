package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/uplinkhq/uplink/internal/api"
)

// Names may hold '/': one escaped path segment each.
func refPath(app, kind, name string) string {
	return appPath(app) + "/" + kind + "/" + url.PathEscape(name)
}

// Prune applies app's retention policy now; dryRun only reports what a
// real run would delete.
func (c *Client) Prune(ctx context.Context, app string, dryRun bool) (api.PruneReport, error) {
	var r api.PruneReport
	return r, c.JSON(ctx, http.MethodPost, appPath(app)+"/prune", api.PruneRequest{DryRun: dryRun}, &r)
}

// DeleteBranch removes a branch and its history (not its builds); a
// branch an installation tracks is refused (409 in_use).
func (c *Client) DeleteBranch(ctx context.Context, app, branch string) error {
	return c.JSON(ctx, http.MethodDelete, refPath(app, "branches", branch), nil, nil)
}

// DeleteTag removes a tag; one an installation's channel names is refused
// (409 in_use).
func (c *Client) DeleteTag(ctx context.Context, app, tag string) error {
	return c.JSON(ctx, http.MethodDelete, refPath(app, "tags", tag), nil, nil)
}

// SetTag points tag at commit (a full or abbreviated SHA of a build),
// creating or moving it.
func (c *Client) SetTag(ctx context.Context, app, tag, commit string) error {
	return c.JSON(ctx, http.MethodPut, refPath(app, "tags", tag), api.SetTagRequest{Commit: commit}, nil)
}

// DeleteBuild removes a build (its artifacts, record and history
// entries); one that a ref or an installation uses is refused (409
// in_use).
func (c *Client) DeleteBuild(ctx context.Context, app, commit string) error {
	return c.JSON(ctx, http.MethodDelete, refPath(app, "builds", commit), nil, nil)
}
