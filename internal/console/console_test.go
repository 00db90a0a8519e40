package console_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/console"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/filesystem"
)

const unitToken = "console-test-token-0123"

var helloApp = artifact.App{Org: "acme", Name: "hello"}

// site is the console over a real instance.Service on filesystem
// storage, with an engine whose steps each take delay.
type site struct {
	t      *testing.T
	url    string
	drv    storage.Driver
	refs   *ref.Store
	svc    *instance.Service
	key    apktest.Key
	client *http.Client
}

func newSite(t *testing.T, delay time.Duration) *site {
	t.Helper()
	dir := t.TempDir()
	drv, err := filesystem.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := &site{t: t, drv: drv, refs: ref.NewStore(drv), key: apktest.NewKey(t)}
	wake := operation.NewWakeup()
	s.svc = instance.New(instance.Config{Storage: drv, Refs: s.refs, Resolver: s.refs, DistributionURL: "http://uplink.test:4080", Wakeup: wake})
	backend := instance.Verifying{Backend: operation.NoBackend{Delay: delay}, Storage: drv}
	eng := operation.NewEngine(s.svc, backend, operation.EngineConfig{
		Lease: time.Second, Scan: 50 * time.Millisecond, Wakeup: wake, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { eng.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	s.url = s.serve(drv)
	s.client = s.newClient()
	return s
}

// serve starts another console (another replica) on drv.
func (s *site) serve(drv storage.Driver) string {
	e := echo.New()
	console.New(console.Config{Storage: drv, Refs: ref.NewStore(drv), Installations: s.svc, Tokens: []string{unitToken},
		Logger: slog.New(slog.DiscardHandler)}).Register(e)
	srv := httptest.NewServer(e)
	s.t.Cleanup(srv.Close)
	return srv.URL
}

// newClient keeps cookies and never follows redirects.
func (s *site) newClient() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func commitOf(label string) string { return fmt.Sprintf("%x", sha1.Sum([]byte(label))) }

func (s *site) publish(label, branch string) string {
	s.t.Helper()
	return s.publishPackage(label, branch, "hello")
}

// publishPackage publishes a repository holding only package pkg.
func (s *site) publishPackage(label, branch, pkg string) string {
	s.t.Helper()
	ctx := context.Background()
	commit := commitOf(label)
	files := apktest.BuildRepository(s.t, s.key, apktest.DefaultArch, apktest.Package{Name: pkg, Version: "1.0." + fmt.Sprint(len(label))})
	for p, b := range files {
		arch, name, _ := strings.Cut(p, "/")
		if _, err := s.drv.Put(ctx, artifact.Key(helloApp, commit, arch, name), bytes.NewReader(b), int64(len(b)), storage.Condition{}); err != nil {
			s.t.Fatal(err)
		}
	}
	if _, err := s.refs.Publish(ctx, helloApp, ref.PublishRequest{Commit: commit, Branch: branch, Message: "commit " + label, Author: "Ada <ada@example.com>"}); err != nil {
		s.t.Fatal(err)
	}
	return commit
}

// install creates installation web tracking main, and waits for it.
func (s *site) install() {
	s.t.Helper()
	spec := instance.Spec{App: helloApp.String(), Package: "hello", Channel: instance.Channel{Branch: "main"},
		Instances: instance.Instances{Count: 1, Image: "alpine/3.20"}, PublicKey: string(s.key.PublicPEM()), KeyName: s.key.Name}
	_, op, _, err := s.svc.Put(context.Background(), "web", spec)
	if err != nil {
		s.t.Fatal(err)
	}
	s.wait(op.ID)
}

// seeded is a site with two commits on main, installation web tracking
// it, and its client signed in.
func seeded(t *testing.T, delay time.Duration) (s *site, older, newer string) {
	s = newSite(t, delay)
	older = s.publish("one", "main")
	newer = s.publish("two", "main")
	s.install()
	s.signIn()
	return s, older, newer
}

func (s *site) wait(id string) *operation.Operation {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		op, err := s.svc.Operation(context.Background(), id)
		if err != nil {
			s.t.Fatal(err)
		}
		if op.State.Done() {
			return op
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("operation %s did not end", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *site) do(c *http.Client, method, path string, form url.Values) (*http.Response, string) {
	s.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, s.url+path, body)
	if err != nil {
		s.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := c.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func (s *site) get(path string) (*http.Response, string) {
	return s.do(s.client, http.MethodGet, path, nil)
}

func (s *site) post(path string, form url.Values) (*http.Response, string) {
	return s.do(s.client, http.MethodPost, path, form)
}

// signIn signs the site's client in.
func (s *site) signIn() {
	s.t.Helper()
	res, _ := s.post("/ui/login", url.Values{"token": {unitToken}})
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/" {
		s.t.Fatalf("sign-in: %d to %q", res.StatusCode, res.Header.Get("Location"))
	}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the token of the signed-in client's forms.
func (s *site) csrf() string {
	s.t.Helper()
	_, body := s.get("/ui/")
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		s.t.Fatalf("no csrf field in %s", body)
	}
	return m[1]
}

func expect(t *testing.T, res *http.Response, body string, status int, contains ...string) {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d\n%s", res.Request.Method, res.Request.URL.Path, res.StatusCode, status, body)
	}
	for _, c := range contains {
		if !strings.Contains(body, c) {
			t.Fatalf("%s %s: body lacks %q\n%s", res.Request.Method, res.Request.URL.Path, c, body)
		}
	}
}

func refPublishTag(commit, tag string) ref.PublishRequest {
	return ref.PublishRequest{Commit: commit, Tags: []string{tag}}
}
