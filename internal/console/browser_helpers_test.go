package console_test

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/server"
	"github.com/uplinkhq/uplink/internal/testenv"
)

const (
	adminToken   = "console-test-token-0123456789abcdef"
	testApp      = "acme/hello"
	installation = "web"
	// stepDelay makes every step of the "no instance backend" driver take
	// visible time, so the operation page can be watched while it runs.
	stepDelay = 400 * time.Millisecond
	// waitLong bounds one browser wait that spans an operation.
	waitLong = 30 * time.Second
)

// uplink is a running server with the test app's two commits on main and
// installation "web" tracking main, its first operation finished.
type uplink struct {
	api          *client.Client
	base         string // http://<admin address>
	older, newer string // full SHAs, newer is main's head
	key          apktest.Key
}

// startUplink starts a real uplink (filesystem storage, no instance
// backend) on loopback and seeds it through the admin API as CI and an
// operator would.
func startUplink(t *testing.T) *uplink {
	t.Helper()
	ctx := context.Background()
	cfg := server.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: t.TempDir(), Storage: "filesystem",
		RedisTimeout: 200 * time.Millisecond, RedisTTL: time.Minute, RefCacheTTL: 5 * time.Second,
		IndexCacheSize: 64 << 20, Retention: 20, AdminTokens: []string{adminToken}, MaxUpload: 64 << 20,
		ShutdownTimeout: 10 * time.Second, OperationLease: 2 * time.Second, OperationScan: 200 * time.Millisecond,
		NoBackendDelay: stepDelay,
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	u := &uplink{api: client.New(srv.AdminAddr(), adminToken), base: "http://" + srv.AdminAddr(), key: apktest.NewKey(t)}
	if _, _, err := u.api.PutKey(ctx, testApp, u.key.Name, u.key.PublicPEM()); err != nil {
		t.Fatalf("put key: %v", err)
	}
	u.older = u.publish(t, "1.0-r0", "hello 1.0: first release", "Ada Lovelace <ada@example.com>")
	u.newer = u.publish(t, "2.0-r0", "hello 2.0: louder greeting", "Grace Hopper <grace@example.com>")
	spec := api.Spec{
		App: testApp, Package: "hello", Channel: api.Channel{Branch: "main"},
		Instances: api.Instances{Count: 1, Image: "alpine/3.20"},
		PublicKey: string(u.key.PublicPEM()), KeyName: u.key.Name,
	}
	v, _, err := u.api.PutInstallation(ctx, installation, spec)
	if err != nil {
		t.Fatalf("put installation: %v", err)
	}
	if v.LastOperation == nil {
		t.Fatal("creating an installation starts its first operation")
	}
	if op := u.waitOp(t, v.LastOperation.ID); op.State != api.Succeeded {
		t.Fatalf("first operation: %s %s", op.State, op.Error)
	}
	return u
}

// publish uploads a signed build of package hello at version (packages
// first, the index last) and publishes it on main; it returns the commit.
func (u *uplink) publish(t *testing.T, version, message, author string) string {
	t.Helper()
	ctx := context.Background()
	commit := fmt.Sprintf("%x", sha1.Sum([]byte(message)))
	files := apktest.BuildRepository(t, u.key, apktest.DefaultArch, apktest.Package{
		Name: "hello", Version: version, Description: "test app",
		Files: []apktest.File{{Path: "usr/share/hello/VERSION", Data: []byte(version)}},
	})
	dir := t.TempDir()
	apktest.WriteDir(t, dir, files)
	var index []string
	for p := range files {
		if strings.HasSuffix(p, "/APKINDEX.tar.gz") {
			index = append(index, p)
			continue
		}
		u.upload(t, commit, dir, p)
	}
	for _, p := range index {
		u.upload(t, commit, dir, p)
	}
	req := api.PublishRequest{Commit: commit, Branch: "main", Message: message, Author: author}
	if _, err := u.api.Publish(ctx, testApp, req); err != nil {
		t.Fatalf("publish %s: %v", commit, err)
	}
	return commit
}

func (u *uplink) upload(t *testing.T, commit, dir, p string) {
	t.Helper()
	arch, name, _ := strings.Cut(p, "/")
	if err := u.api.Upload(context.Background(), testApp, commit, arch, name, filepath.Join(dir, p)); err != nil {
		t.Fatalf("upload %s: %v", p, err)
	}
}

// waitOp waits until operation id ends and returns it.
func (u *uplink) waitOp(t *testing.T, id string) *api.Operation {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		op, err := u.api.Operation(context.Background(), id)
		if err != nil {
			t.Fatalf("operation %s: %v", id, err)
		}
		if op.State.Done() {
			return op
		}
		if time.Now().After(deadline) {
			t.Fatalf("operation %s still %s after %v", id, op.State, waitLong)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// channel is the installation's channel as the admin API reports it.
func (u *uplink) channel(t *testing.T) api.Channel {
	t.Helper()
	v, err := u.api.Installation(context.Background(), installation)
	if err != nil {
		t.Fatalf("installation: %v", err)
	}
	return v.Channel
}

// operationCount is how many operations the installation has had.
func (u *uplink) operationCount(t *testing.T) int {
	t.Helper()
	ops, err := u.api.Operations(context.Background(), installation)
	if err != nil {
		t.Fatalf("operations: %v", err)
	}
	return len(ops)
}

// page is a browser tab on the console of u.
type page struct {
	t   *testing.T
	ctx context.Context
	u   *uplink
}

func (u *uplink) browser(t *testing.T, width, height int) *page {
	return &page{t: t, ctx: testenv.Browser(t, width, height), u: u}
}

// run runs a within a time bound, so a missing element fails the test
// with what was being done instead of hanging until the test's deadline.
func run[T any](p *page, within time.Duration, what string, a chromedp.Action[T]) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, within)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		p.t.Fatalf("%s, on %s: %v", what, p.location(), err)
	}
	return v
}

// open navigates to path (relative to the console's origin) and returns
// the status of the document it ends on, after redirects.
func (p *page) open(path string) int64 {
	p.t.Helper()
	return run(p, 10*time.Second, "open "+path, chromedp.NavigateResponse(p.u.base+path)).Status
}

// click clicks the first element sel matches, waits for the page it leads
// to, and returns that page's status.
func (p *page) click(sel string) int64 {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
	if err == nil && resp == nil {
		err = errors.New("no document loaded")
	}
	if err != nil {
		p.t.Fatalf("click %s, on %s: %v", sel, p.location(), err)
	}
	return resp.Status
}

// wait waits until sel matches a visible element.
func (p *page) wait(sel string, within time.Duration) {
	p.t.Helper()
	run(p, within, "waiting for "+sel, chromedp.WaitVisible(chromedp.CSS(sel)))
}

// text is the visible text of the first element sel matches, its spaces
// collapsed.
func (p *page) text(sel string) string {
	p.t.Helper()
	return strings.Join(strings.Fields(run(p, 5*time.Second, "text of "+sel, chromedp.Text(chromedp.CSS(sel)))), " ")
}

// attr is attribute name of the first element sel matches ("" if absent).
func (p *page) attr(sel, name string) string {
	p.t.Helper()
	return run(p, 5*time.Second, "attribute "+name+" of "+sel, chromedp.AttributeValue(chromedp.CSS(sel), name)).Value
}

// eval evaluates a JavaScript expression in the page (DevTools is not
// bound by the page's CSP) and decodes its result.
func eval[T any](p *page, expr string) T {
	p.t.Helper()
	return run(p, 5*time.Second, "evaluate "+expr, chromedp.Evaluate[T](expr))
}

// location is the page's URL, or a note that it could not be read.
func (p *page) location() string {
	ctx, cancel := context.WithTimeout(p.ctx, 2*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "(location unknown: " + err.Error() + ")"
	}
	return s
}

// path is the page's path and query.
func (p *page) path() string {
	p.t.Helper()
	u, err := url.Parse(p.location())
	if err != nil {
		p.t.Fatal(err)
	}
	return u.RequestURI()
}

func (p *page) screenshot(name string) { p.t.Helper(); testenv.Screenshot(p.t, p.ctx, name) }

// signIn signs in on the sign-in page the browser shows now and returns
// the status of the page it lands on.
func (p *page) signIn() int64 {
	p.t.Helper()
	p.wait("form#login input[name=token]", 5*time.Second)
	run(p, 5*time.Second, "typing the token", chromedp.SendKeys(chromedp.CSS("form#login input[name=token]"), adminToken))
	p.screenshot("sign-in")
	return p.click("form#login button[type=submit]")
}

// noRedirects is an HTTP client that shows redirects instead of following them.
var noRedirects = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func short(sha string) string { return sha[:7] }
