// Package client talks to uplink's admin API in its wire types
// (internal/api); the CLI is built on it.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/version"
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

// TrustCA makes c trust, besides the system's roots, the CA certificates
// in pem: an https admin listener whose certificate a private CA signed.
func (c *Client) TrustCA(pem []byte) error {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return errors.New("no PEM certificate in it")
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	c.HTTP.Transport = t
	return nil
}

// Unreachable reports whether err means that no request reached the
// server: the connection was refused or timed out, the name did not
// resolve, or the TLS handshake failed (an untrusted certificate, TLS
// spoken to a plain listener). An answer of the server is never that.
func Unreachable(err error) bool {
	var (
		ae     *Error
		op     *net.OpError
		dns    *net.DNSError
		verify *tls.CertificateVerificationError
		header tls.RecordHeaderError
		ua     x509.UnknownAuthorityError
		host   x509.HostnameError
	)
	switch {
	case err == nil, errors.As(err, &ae):
		return false
	case errors.As(err, &op) && op.Op == "dial", errors.As(err, &dns),
		errors.As(err, &verify), errors.As(err, &header), errors.As(err, &ua), errors.As(err, &host):
		return true
	}
	return false
}

// Error is every error answer of the API: its status and docs/api.md's
// error body.
type Error struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
	// Operation is the running operation of a 409 operation_running.
	Operation string `json:"operation,omitempty"`
	// Problems says why a publish was refused (422).
	Problems []api.Problem `json:"problems"`
	// Omitted counts the problems the server left out of Problems.
	Omitted int `json:"omitted"`
	// UsedBy names what still uses what a 409 in_use refused to delete.
	UsedBy []string `json:"used_by,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code) }

// Busy reports the answer to a change of an installation while another
// of its operations runs; Operation names that one when the server did.
func (e *Error) Busy() bool {
	return e.Status == http.StatusConflict && e.Code == api.CodeOperationRunning
}

// maxAnswer bounds a JSON answer, maxErrorBody an error answer.
const (
	maxAnswer    = 64 << 20
	maxErrorBody = 1 << 20
)

// send makes an authorized request and returns the response of a
// success; an answer of 300 or more is an *Error. body may be nil, and
// size is its length (-1: unknown).
func (c *Client) send(ctx context.Context, method, path, contentType string, body io.Reader, size int64, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return nil, err
	}
	if size >= 0 {
		req.ContentLength = size
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("User-Agent", version.UserAgent())
	if contentType != "" && body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	return resp, nil
}

// readError reads an error answer; one that is not the API's JSON (a
// proxy's page, say) keeps its text as the message.
func readError(resp *http.Response) *Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body api.ErrorBody
	if json.Unmarshal(b, &body) != nil || body.Error.Message == "" {
		body.Error = api.Error{Code: "error", Message: strings.TrimSpace(string(b))}
		if body.Error.Message == "" {
			body.Error.Message = resp.Status
		}
	}
	e := body.Error
	return &Error{Status: resp.StatusCode, Code: e.Code, Message: e.Message, Operation: e.Operation, Problems: e.Problems, Omitted: e.Omitted, UsedBy: e.UsedBy}
}

// do sends a request and decodes the JSON answer into out (nil to ignore
// it); it returns the status of a success.
func (c *Client) do(ctx context.Context, method, path, contentType string, body io.Reader, size int64, out any) (int, error) {
	resp, err := c.send(ctx, method, path, contentType, body, size, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decoding the answer of %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// JSON calls any endpoint with in as the JSON body (nil for none) and
// decodes the answer into out (nil to ignore it).
func (c *Client) JSON(ctx context.Context, method, path string, in, out any) error {
	_, err := c.jsonStatus(ctx, method, path, in, out)
	return err
}

func (c *Client) jsonStatus(ctx context.Context, method, path string, in, out any) (int, error) {
	var body io.Reader
	size := int64(-1)
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body, size = bytes.NewReader(b), int64(len(b))
	}
	return c.do(ctx, method, path, "application/json", body, size, out)
}

// Get decodes any GET endpoint into out.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.JSON(ctx, http.MethodGet, path, nil, out)
}

func appPath(app string) string { return "/api/v1/apps/" + app }

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
	p := appPath(app) + "/builds/" + commit + "/" + url.PathEscape(arch) + "/" + url.PathEscape(name)
	_, err = c.do(ctx, http.MethodPut, p, "application/octet-stream", f, st.Size(), nil)
	return err
}

// Publish publishes an uploaded build.
func (c *Client) Publish(ctx context.Context, app string, req api.PublishRequest) (api.Build, error) {
	var b api.Build
	return b, c.JSON(ctx, http.MethodPost, appPath(app)+"/builds", req, &b)
}

// Builds lists an app's builds, newest first.
func (c *Client) Builds(ctx context.Context, app, branch string, limit int) ([]api.Build, error) {
	q := url.Values{}
	if branch != "" {
		q.Set("branch", branch)
	}
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	var out api.Builds
	return out.Builds, c.Get(ctx, appPath(app)+"/builds?"+q.Encode(), &out)
}

// Refs lists an app's branches and tags.
func (c *Client) Refs(ctx context.Context, app string) (api.Refs, error) {
	var out api.Refs
	return out, c.Get(ctx, appPath(app)+"/refs", &out)
}
