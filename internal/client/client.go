// Package client talks to uplink's admin API; the CLI is built on it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/uplinkhq/uplink/distribution/ref"
)

// Client calls one uplink's admin API.
type Client struct {
	Base  string // e.g. http://127.0.0.1:4040
	Token string
	HTTP  *http.Client
}

// New returns a Client for addr ("host:port" or a URL).
func New(addr, token string) *Client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{Base: strings.TrimRight(addr, "/"), Token: token, HTTP: &http.Client{Timeout: 0}}
}

// Error is an error answer of the API.
type Error struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
	// Problems says why a publish was refused (422).
	Problems []Problem `json:"problems"`
	// Omitted counts the problems the server left out of Problems.
	Omitted int `json:"omitted"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code) }

func (c *Client) do(ctx context.Context, method, path, contentType string, body io.Reader, size int64, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return 0, err
	}
	if size >= 0 {
		req.ContentLength = size
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 300 {
		var e struct{ Error Error }
		if json.Unmarshal(b, &e) != nil || e.Error.Message == "" {
			e.Error = Error{Code: "error", Message: strings.TrimSpace(string(b))}
		}
		e.Error.Status = resp.StatusCode
		return resp.StatusCode, &e.Error
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decoding the answer of %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

func (c *Client) json(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	size := int64(-1)
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, size = bytes.NewReader(b), int64(len(b))
	}
	_, err := c.do(ctx, method, path, "application/json", body, size, out)
	return err
}

// Upload uploads one artifact file.
func (c *Client) Upload(ctx context.Context, app, commit, arch, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	p := "/api/v1/apps/" + app + "/builds/" + commit + "/" + url.PathEscape(arch) + "/" + url.PathEscape(name)
	_, err = c.do(ctx, http.MethodPut, p, "application/octet-stream", f, st.Size(), nil)
	return err
}

// Publish publishes an uploaded build.
func (c *Client) Publish(ctx context.Context, app string, req ref.PublishRequest) (ref.Build, error) {
	var b ref.Build
	return b, c.json(ctx, http.MethodPost, "/api/v1/apps/"+app+"/builds", req, &b)
}

// Builds lists an app's builds, newest first.
func (c *Client) Builds(ctx context.Context, app, branch string, limit int) ([]ref.Build, error) {
	q := url.Values{}
	if branch != "" {
		q.Set("branch", branch)
	}
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	var out struct{ Builds []ref.Build }
	return out.Builds, c.json(ctx, http.MethodGet, "/api/v1/apps/"+app+"/builds?"+q.Encode(), nil, &out)
}

// Refs lists an app's branches and tags.
func (c *Client) Refs(ctx context.Context, app string) (ref.Refs, error) {
	var out ref.Refs
	return out, c.json(ctx, http.MethodGet, "/api/v1/apps/"+app+"/refs", nil, &out)
}

// Get decodes any GET endpoint into out.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.json(ctx, http.MethodGet, path, nil, out)
}

// JSON calls any endpoint with in as the JSON body (nil for none) and
// decodes the answer into out (nil to ignore it).
func (c *Client) JSON(ctx context.Context, method, path string, in, out any) error {
	return c.json(ctx, method, path, in, out)
}
