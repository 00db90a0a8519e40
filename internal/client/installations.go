package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/uplinkhq/uplink/internal/api"
)

func installationPath(name string) string { return "/api/v1/installations/" + url.PathEscape(name) }

func operationPath(id string) string { return "/api/v1/operations/" + url.PathEscape(id) }

// Installations lists the installations.
func (c *Client) Installations(ctx context.Context) ([]api.Installation, error) {
	var out api.Installations
	return out.Installations, c.Get(ctx, "/api/v1/installations", &out)
}

// Installation returns one installation.
func (c *Client) Installation(ctx context.Context, name string) (api.Installation, error) {
	var v api.Installation
	return v, c.Get(ctx, installationPath(name), &v)
}

// PutInstallation creates (created is true) or updates an installation.
func (c *Client) PutInstallation(ctx context.Context, name string, spec api.Spec) (v api.Installation, created bool, err error) {
	status, err := c.jsonStatus(ctx, http.MethodPut, installationPath(name), spec, &v)
	return v, status == http.StatusCreated, err
}

// DeleteInstallation starts the operation that removes an installation's
// instances. While another operation of the installation runs, the error
// is an *Error that is Busy.
func (c *Client) DeleteInstallation(ctx context.Context, name string) (*api.Operation, error) {
	var op api.Operation
	if err := c.JSON(ctx, http.MethodDelete, installationPath(name), nil, &op); err != nil {
		return nil, err
	}
	return &op, nil
}

// SetChannel changes an installation's channel and returns the operation
// that carries the change out; the installation's channel moves when that
// operation succeeds (if it fails, Installation.LastAttempt says so and
// the channel stays). to names exactly one of a commit (full or
// abbreviated SHA) to pin to, a tag to pin to the commit it names now, or
// a branch to track. While another operation of the installation runs,
// the error is an *Error that is Busy.
func (c *Client) SetChannel(ctx context.Context, name string, to api.Channel) (*api.Operation, error) {
	n := 0
	for _, s := range []string{to.Commit, to.Tag, to.Branch} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("a channel change names exactly one of a commit, a tag or a branch")
	}
	var op api.Operation
	if err := c.JSON(ctx, http.MethodPut, installationPath(name)+"/channel", to, &op); err != nil {
		return nil, err
	}
	return &op, nil
}

// History lists an installation's channel changes, newest first.
func (c *Client) History(ctx context.Context, name string) ([]api.HistoryEntry, error) {
	var out api.History
	return out.History, c.Get(ctx, installationPath(name)+"/history", &out)
}

// Operation returns one operation.
func (c *Client) Operation(ctx context.Context, id string) (*api.Operation, error) {
	var op api.Operation
	if err := c.Get(ctx, operationPath(id), &op); err != nil {
		return nil, err
	}
	return &op, nil
}

// Operations lists an installation's operations, newest first.
func (c *Client) Operations(ctx context.Context, installationName string) ([]*api.Operation, error) {
	p := "/api/v1/operations"
	if installationName != "" {
		p += "?" + url.Values{"installation": {installationName}}.Encode()
	}
	var out api.Operations
	return out.Operations, c.Get(ctx, p, &out)
}
