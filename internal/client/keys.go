package client

import (
	"bytes"
	"context"
	"net/http"
	"net/url"

	"github.com/uplinkhq/uplink/internal/api"
)

func keyPath(app, name string) string { return appPath(app) + "/keys/" + url.PathEscape(name) }

// PutKey registers (created) or replaces the key name of app.
func (c *Client) PutKey(ctx context.Context, app, name string, pem []byte) (api.Key, bool, error) {
	var k api.Key
	status, err := c.do(ctx, http.MethodPut, keyPath(app, name), "application/x-pem-file", bytes.NewReader(pem), int64(len(pem)), &k)
	return k, status == http.StatusCreated, err
}

// Keys lists the keys app trusts.
func (c *Client) Keys(ctx context.Context, app string) ([]api.Key, error) {
	var out api.Keys
	return out.Keys, c.Get(ctx, appPath(app)+"/keys", &out)
}

// DeleteKey removes a key.
func (c *Client) DeleteKey(ctx context.Context, app, name string) error {
	_, err := c.do(ctx, http.MethodDelete, keyPath(app, name), "", nil, -1, nil)
	return err
}

// App returns an app's settings and keys.
func (c *Client) App(ctx context.Context, app string) (api.App, error) {
	var a api.App
	return a, c.Get(ctx, appPath(app), &a)
}

// SetAllowUnsigned says whether app accepts unsigned indexes.
func (c *Client) SetAllowUnsigned(ctx context.Context, app string, allow bool) (api.App, error) {
	var a api.App
	return a, c.JSON(ctx, http.MethodPatch, appPath(app), api.AppPatch{AllowUnsigned: &allow}, &a)
}
