package client

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"time"
)

// Problem is one reason a publish was refused: the index of Arch, the
// file below the commit, and what is wrong with it.
type Problem struct {
	Arch    string `json:"arch"`
	File    string `json:"file"`
	Kind    string `json:"kind"`
	Problem string `json:"problem"`
}

// Key is a key an app trusts.
type Key struct {
	Name        string    `json:"name"`
	Fingerprint string    `json:"fingerprint"`
	CreatedAt   time.Time `json:"created_at"`
}

// App is an app's settings and keys.
type App struct {
	App           string `json:"app"`
	AllowUnsigned bool   `json:"allow_unsigned"`
	Keys          []Key  `json:"keys"`
}

func keyPath(app, name string) string { return "/api/v1/apps/" + app + "/keys/" + url.PathEscape(name) }

// PutKey registers (created) or replaces the key name of app.
func (c *Client) PutKey(ctx context.Context, app, name string, pem []byte) (Key, bool, error) {
	var k Key
	status, err := c.do(ctx, http.MethodPut, keyPath(app, name), "application/x-pem-file", bytes.NewReader(pem), int64(len(pem)), &k)
	return k, status == http.StatusCreated, err
}

// Keys lists the keys app trusts.
func (c *Client) Keys(ctx context.Context, app string) ([]Key, error) {
	var out struct{ Keys []Key }
	return out.Keys, c.json(ctx, http.MethodGet, "/api/v1/apps/"+app+"/keys", nil, &out)
}

// DeleteKey removes a key.
func (c *Client) DeleteKey(ctx context.Context, app, name string) error {
	_, err := c.do(ctx, http.MethodDelete, keyPath(app, name), "", nil, -1, nil)
	return err
}

// App returns an app's settings and keys.
func (c *Client) App(ctx context.Context, app string) (App, error) {
	var a App
	return a, c.json(ctx, http.MethodGet, "/api/v1/apps/"+app, nil, &a)
}

// SetAllowUnsigned says whether app accepts unsigned indexes.
func (c *Client) SetAllowUnsigned(ctx context.Context, app string, allow bool) (App, error) {
	var a App
	return a, c.json(ctx, http.MethodPatch, "/api/v1/apps/"+app, map[string]bool{"allow_unsigned": allow}, &a)
}
