// Package incus is a small REST client of Incus (and LXD), named after the
// official Go client (github.com/lxc/incus/client), which we cannot depend
// on, and trimmed to the calls uplink makes (see rollout.Client). Unlike
// the official client, every blocking method takes a context.Context as
// its first argument.
package incus

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
)

// Dialect tells which daemon answers: the API is the same, a few details
// (file header prefix, exec output path, /wait failures) differ.
type Dialect string

const (
	DialectIncus Dialect = "incus"
	DialectLXD   Dialect = "lxd"
)

// ConnectionArgs configures a connection. Certificates and keys are PEM.
type ConnectionArgs struct {
	// TLSClientCert and TLSClientKey authenticate us to the server.
	TLSClientCert string
	TLSClientKey  string

	// TLSServerCert pins the server certificate, as the official client
	// does: it becomes the only root CA and its first DNS name the
	// expected server name.
	TLSServerCert string

	UserAgent string
}

// ProtocolIncus is a connection to an Incus or LXD server. It is safe for
// concurrent use; UseProject returns a copy bound to another project.
type ProtocolIncus struct {
	http         *http.Client
	httpBaseURL  string // scheme://host, no trailing slash
	httpUnixPath string
	userAgent    string
	project      string

	server  *Server // from GET /1.0 at connect time, read-only afterwards
	dialect Dialect
}

// ConnectIncus connects over HTTPS, e.g. to "https://host:8443".
func ConnectIncus(ctx context.Context, rawURL string, args *ConnectionArgs) (*ProtocolIncus, error) {
	if args == nil {
		args = &ConnectionArgs{}
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("incus: invalid URL %q: want https://host[:port]", rawURL)
	}
	cfg, err := tlsConfig(args)
	if err != nil {
		return nil, err
	}
	c := &ProtocolIncus{
		http:        &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}},
		httpBaseURL: u.Scheme + "://" + u.Host,
		userAgent:   args.UserAgent,
	}
	return c, c.connect(ctx)
}

// ConnectIncusUnix connects over a unix socket. An empty path is looked up
// as the official client does; pass the path explicitly for LXD.
func ConnectIncusUnix(ctx context.Context, path string, args *ConnectionArgs) (*ProtocolIncus, error) {
	if args == nil {
		args = &ConnectionArgs{}
	}
	if path == "" {
		path = defaultUnixSocket()
	}
	c := &ProtocolIncus{
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
			// A restarted daemon leaves idle connections dead; the official
			// client avoids reusing them too.
			DisableKeepAlives: true,
		}},
		httpBaseURL:  "http://unix.socket", // the host is ignored
		httpUnixPath: path,
		userAgent:    args.UserAgent,
	}
	return c, c.connect(ctx)
}

// defaultUnixSocket follows the official lookup order.
func defaultUnixSocket() string {
	if p := os.Getenv("INCUS_SOCKET"); p != "" {
		return p
	}
	if d := os.Getenv("INCUS_DIR"); d != "" {
		return filepath.Join(d, "unix.socket")
	}
	if _, err := os.Stat("/run/incus/unix.socket"); err == nil {
		return "/run/incus/unix.socket"
	}
	return "/var/lib/incus/unix.socket"
}

// connect reads GET /1.0 once for the extension list and the dialect.
func (c *ProtocolIncus) connect(ctx context.Context) error {
	srv, _, err := c.GetServer(ctx)
	if err != nil {
		return err
	}
	// An untrusted client gets no environment (so no dialect) and a 403 on
	// everything else: fail here, where the cause is clear.
	if srv.Auth != "trusted" {
		return StatusErrorf(http.StatusForbidden, "not authorized: the server does not trust this client (auth %q)", srv.Auth)
	}
	c.server = srv
	c.dialect = DialectLXD
	if srv.Environment.Server == string(DialectIncus) {
		c.dialect = DialectIncus
	}
	return nil
}

func tlsConfig(args *ConnectionArgs) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13} // the daemons refuse anything older
	if args.TLSClientCert != "" || args.TLSClientKey != "" {
		cert, err := tls.X509KeyPair([]byte(args.TLSClientCert), []byte(args.TLSClientKey))
		if err != nil {
			return nil, fmt.Errorf("incus: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if args.TLSServerCert != "" {
		block, _ := pem.Decode([]byte(args.TLSServerCert))
		if block == nil {
			return nil, errors.New("incus: invalid server certificate PEM")
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("incus: server certificate: %w", err)
		}
		// Self-signed daemon certificates name the host they were made on,
		// not the address we dial: verify against that name.
		if len(cert.DNSNames) > 0 {
			cfg.ServerName = cert.DNSNames[0]
		}
		cfg.RootCAs = x509.NewCertPool()
		cfg.RootCAs.AddCert(cert)
	}
	return cfg, nil
}

// Dialect reports whether the server is Incus or LXD.
func (c *ProtocolIncus) Dialect() Dialect { return c.dialect }

// HasExtension reports whether the server has an API extension.
func (c *ProtocolIncus) HasExtension(name string) bool {
	if c.server == nil {
		return false
	}
	for _, e := range c.server.APIExtensions {
		if e == name {
			return true
		}
	}
	return false
}

// ErrMissingExtension wraps calls refused because the server lacks an
// API extension, e.g. instances_rebuild on LXD 5.0.
var ErrMissingExtension = errors.New("server is missing a required API extension")

func (c *ProtocolIncus) checkExtension(name string) error {
	if !c.HasExtension(name) {
		return fmt.Errorf("%w: %q", ErrMissingExtension, name)
	}
	return nil
}

// UseProject returns a copy of the client that works in project name.
func (c *ProtocolIncus) UseProject(name string) *ProtocolIncus {
	cc := *c
	cc.project = name
	return &cc
}

// StatusError is an error answer of the API.
type StatusError struct {
	status int
	msg    string
}

// StatusErrorf returns a StatusError, e.g. for fakes of this client.
func StatusErrorf(status int, format string, args ...any) *StatusError {
	return &StatusError{status: status, msg: fmt.Sprintf(format, args...)}
}

func (e *StatusError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return http.StatusText(e.status)
}

// Status is the HTTP status the error stands for.
func (e *StatusError) Status() int { return e.status }

// IsNotFound reports whether err is a 404 answer, such as a missing
// instance or an operation that has been forgotten.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.status == http.StatusNotFound
}

// response is the envelope of every JSON answer.
type response struct {
	Type      string          `json:"type"` // sync, async or error
	Operation string          `json:"operation"`
	ErrorCode int             `json:"error_code"`
	Error     string          `json:"error"`
	Metadata  json.RawMessage `json:"metadata"`
}

// url builds an absolute URL for an API path (starting with /1.0) and
// adds the project, unless the caller set project or all-projects.
func (c *ProtocolIncus) url(path string, query url.Values) string {
	u := c.httpBaseURL + path
	if query == nil {
		query = url.Values{}
	}
	if c.project != "" && query.Get("project") == "" && query.Get("all-projects") == "" {
		query.Set("project", c.project)
	}
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return u
}

// do sends a request. body is sent raw if it is an io.Reader and as JSON
// otherwise. Error answers are returned as *StatusError, the body closed.
func (c *ProtocolIncus) do(ctx context.Context, method, u string, body any, etag string, header http.Header) (*http.Response, error) {
	var r io.Reader
	contentType := ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		r, contentType = b, "application/octet-stream"
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		r, contentType = bytes.NewReader(buf), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if etag != "" {
		req.Header.Set("If-Match", etag)
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		_, err := parseResponse(resp)
		if err == nil {
			err = StatusErrorf(resp.StatusCode, "%s %s: %s", method, req.URL.Path, resp.Status)
		}
		return nil, err
	}
	return resp, nil
}

// parseResponse decodes the envelope. A type:"error" body is an error even
// under HTTP 200, as Incus 6.0 sends from /wait.
func parseResponse(resp *http.Response) (*response, error) {
	var r response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		if resp.StatusCode >= 300 {
			return nil, StatusErrorf(resp.StatusCode, "%s %s: %s", resp.Request.Method, resp.Request.URL.Path, resp.Status)
		}
		return nil, fmt.Errorf("incus: decode %s %s: %w", resp.Request.Method, resp.Request.URL.Path, err)
	}
	if r.Type == "error" {
		status := r.ErrorCode // the HTTP status is 200 in the /wait quirk
		if status == 0 {
			status = resp.StatusCode
		}
		return nil, &StatusError{status: status, msg: r.Error}
	}
	return &r, nil
}

// query sends a request to an API path and decodes the envelope.
func (c *ProtocolIncus) query(ctx context.Context, method, path string, q url.Values, body any, etag string) (*response, string, error) {
	resp, err := c.do(ctx, method, c.url(path, q), body, etag, nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	r, err := parseResponse(resp)
	if err != nil {
		return nil, "", err
	}
	return r, resp.Header.Get("ETag"), nil
}

// queryStruct is query with the metadata decoded into target.
func (c *ProtocolIncus) queryStruct(ctx context.Context, method, path string, q url.Values, body any, etag string, target any) (string, error) {
	r, etag, err := c.query(ctx, method, path, q, body, etag)
	if err != nil {
		return "", err
	}
	if target != nil && len(r.Metadata) > 0 {
		if err := json.Unmarshal(r.Metadata, target); err != nil {
			return "", fmt.Errorf("incus: decode %s %s: %w", method, path, err)
		}
	}
	return etag, nil
}
