package distribution_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
)

// fakePresigner signs nothing: its URL names the key and the expiry.
type fakePresigner struct {
	mu    sync.Mutex
	keys  []string
	fails error
}

func (p *fakePresigner) PresignGet(_ context.Context, key string, expiry time.Duration) (*url.URL, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = append(p.keys, key)
	if p.fails != nil {
		return nil, p.fails
	}
	return &url.URL{Scheme: "http", Host: "s3.example", Path: "/bucket/" + key, RawQuery: "X-Amz-Expires=" + expiry.String()}, nil
}

func (p *fakePresigner) calls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.keys)
}

type redirectEnv struct {
	srv     *httptest.Server
	reg     *prometheus.Registry
	repos   *distribution.Fallbacks
	commits []string // old, cur (see newRepositories)
	signer  *fakePresigner
}

func newRedirectEnv(t *testing.T, auth distribution.Authorizer, allow ...netip.Prefix) *redirectEnv {
	repos, commits := newFallbacks(t)
	env := &redirectEnv{reg: prometheus.NewRegistry(), repos: repos, commits: commits, signer: &fakePresigner{}}
	h := distribution.New(distribution.Config{
		Protocol:   distribution.NewAccess(repos, allow, auth),
		Redirect:   &distribution.Redirect{Packages: repos, Presigner: env.signer, Expiry: 3 * time.Minute},
		Registerer: env.reg,
	})
	e := echo.New()
	h.Register(e)
	env.srv = httptest.NewServer(e)
	t.Cleanup(env.srv.Close)
	return env
}

// do sends method to the file of ref without following redirects.
func (env *redirectEnv) do(t *testing.T, method, ref, file string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, env.srv.URL+"/distribution/"+ref+"/acme/hello/x86_64/"+file, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestRedirect: with a Redirect, a package is a 302 (GET and HEAD) to the
// presigned URL of the file of the commit that answers, with the
// client-index and branch fallbacks; indexes are still served; a missing
// file is 404 and a failed signing 503; the 302s are counted.
func TestRedirect(t *testing.T) {
	env := newRedirectEnv(t, nil)
	old, cur := env.commits[0], env.commits[1]
	location := func(commit, file string) string {
		return "http://s3.example/bucket/" + artifact.Key(acme, commit, "x86_64", file) + "?X-Amz-Expires=3m0s"
	}
	check := func(what string, resp *http.Response, body, commit, file string) {
		t.Helper()
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("%s: %d %q, want 302", what, resp.StatusCode, body)
		}
		h := resp.Header
		if got := h.Get("Location"); got != location(commit, file) {
			t.Errorf("%s: Location %q, want %q", what, got, location(commit, file))
		}
		if h.Get("X-Uplink-Commit") != commit || h.Get("Cache-Control") != "no-store" || h.Get("Content-Length") != "0" || body != "" {
			t.Errorf("%s: commit %q, Cache-Control %q, Content-Length %q, body %q", what,
				h.Get("X-Uplink-Commit"), h.Get("Cache-Control"), h.Get("Content-Length"), body)
		}
		if h.Get("ETag") != "" || h.Get("Last-Modified") != "" || h.Get("Accept-Ranges") != "" {
			t.Errorf("%s: a redirect with the object's headers: %v", what, h)
		}
	}

	for _, method := range []string{http.MethodGet, http.MethodHead} {
		resp, body := env.do(t, method, "main", "b.apk")
		check(method+" b.apk through main", resp, body, cur, "b.apk")
	}
	resp, body := env.do(t, http.MethodGet, cur, "b.apk")
	check("b.apk by commit", resp, body, cur, "b.apk")
	// Only the older commit has a.apk: the branch fallback names it.
	resp, body = env.do(t, http.MethodGet, "main", "a.apk")
	check("a.apk through main", resp, body, old, "a.apk")

	// The index is served, not redirected.
	resp, body = env.do(t, http.MethodGet, "main", artifact.IndexFile)
	if resp.StatusCode != http.StatusOK || body != "index of "+cur || resp.Header.Get("Location") != "" {
		t.Fatalf("index: %d %q", resp.StatusCode, body)
	}
	// A client that last got the older index through main is sent to the
	// older commit's b.apk.
	client := netip.MustParseAddr("127.0.0.1")
	env.repos.Received(t.Context(), distribution.Request{Ref: "main", Org: "acme", App: "hello", Arch: "x86_64",
		File: artifact.IndexFile, Client: client}, ref.Resolution{Kind: ref.KindBranch, Commit: old})
	resp, body = env.do(t, http.MethodGet, "main", "b.apk")
	check("b.apk for a client of the older index", resp, body, old, "b.apk")

	// No package byte went through the handler (error bodies below do).
	if n := counter(t, env.reg, "uplink_distribution_bytes_total", "package"); n != 0 {
		t.Errorf("package bytes %v, want 0", n)
	}
	calls := env.signer.calls()
	resp, _ = env.do(t, http.MethodGet, "main", "c.apk")
	if resp.StatusCode != http.StatusNotFound || env.signer.calls() != calls {
		t.Errorf("missing file: %d, %d signings, want 404 and none", resp.StatusCode, env.signer.calls()-calls)
	}
	env.signer.fails = errors.New("no region")
	resp, _ = env.do(t, http.MethodGet, "main", "b.apk")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("failed signing: %d, want 503 with Retry-After", resp.StatusCode)
	}

	if n := counter(t, env.reg, "uplink_distribution_requests_total", "302", "package", "branch"); n != 4 {
		t.Errorf("302s through a branch counted %v, want 4", n)
	}
	if n := counter(t, env.reg, "uplink_distribution_requests_total", "302", "package", "commit"); n != 1 {
		t.Errorf("302s by commit counted %v, want 1", n)
	}
}

// TestRedirectAccess: access is checked before: a client outside the
// allow-list or refused by the Authorizer gets 403, one the Authorizer
// cannot decide 503, and nothing is signed for them.
func TestRedirectAccess(t *testing.T) {
	for _, c := range []struct {
		name  string
		auth  distribution.Authorizer
		allow []netip.Prefix
		want  int
	}{
		{"outside the allow-list", nil, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, http.StatusForbidden},
		{"refused by the authorizer", &authorizer{verdict: refuse}, nil, http.StatusForbidden},
		{"undecided", &authorizer{verdict: undecided}, nil, http.StatusServiceUnavailable},
	} {
		env := newRedirectEnv(t, c.auth, c.allow...)
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, _ := env.do(t, method, "main", "b.apk")
			if resp.StatusCode != c.want || resp.Header.Get("Location") != "" {
				t.Errorf("%s, %s: %d, want %d", c.name, method, resp.StatusCode, c.want)
			}
		}
		if n := env.signer.calls(); n != 0 {
			t.Errorf("%s: %d signings", c.name, n)
		}
	}
}
