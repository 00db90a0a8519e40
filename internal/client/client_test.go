package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/admin"
	"github.com/uplinkhq/uplink/internal/admin/admintest"
	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
)

// The tests of this file run the client against the real admin API over
// in-process storage.

const commitA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

type site struct {
	*admintest.Site
	c *client.Client
}

func newSite(t *testing.T) *site {
	s := admintest.New(t)
	return &site{Site: s, c: client.New(s.URL, admintest.Token)}
}

// publish uploads and publishes commitA of acme/web on main.
func (s *site) publish(t *testing.T) api.Build {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "APKINDEX.tar.gz")
	if err := os.WriteFile(path, []byte("index"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Upload(ctx, "acme/web", commitA, "x86_64", "APKINDEX.tar.gz", path); err != nil {
		t.Fatal(err)
	}
	b, err := s.c.Publish(ctx, "acme/web", api.PublishRequest{Commit: commitA, Branch: "main", Tags: []string{"v1"}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (s *site) install(t *testing.T) api.Installation {
	t.Helper()
	spec := api.Spec{App: "acme/web", Package: "web", Channel: api.Channel{Branch: "main"},
		Instances: api.Instances{Image: "alpine/3.20"}, KeyName: "acme-web.rsa.pub", PublicKey: string(apktest.NewKey(t).PublicPEM())}
	v, created, err := s.c.PutInstallation(context.Background(), "web", spec)
	if err != nil || !created {
		t.Fatalf("PutInstallation: created %v, %v", created, err)
	}
	if _, created, err := s.c.PutInstallation(context.Background(), "web", spec); err != nil || created {
		t.Fatalf("PutInstallation again: created %v, %v", created, err)
	}
	return v
}

func asError(t *testing.T, err error) *client.Error {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("%v (%T) is not a *client.Error", err, err)
	}
	return e
}

// TestBuildsAndKeys: the builds and keys calls, in the API's types.
func TestBuildsAndKeys(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	b := s.publish(t)
	if b.Commit != commitA || len(b.Archs) != 1 || b.Archs[0] != "x86_64" {
		t.Fatalf("published %+v", b)
	}
	builds, err := s.c.Builds(ctx, "acme/web", "main", 10)
	if err != nil || len(builds) != 1 || builds[0].Commit != commitA {
		t.Fatalf("builds %+v, %v", builds, err)
	}
	refs, err := s.c.Refs(ctx, "acme/web")
	if err != nil || refs.Branches["main"].Commit != commitA || refs.Tags["v1"].Commit != commitA {
		t.Fatalf("refs %+v, %v", refs, err)
	}
	key := apktest.NewKey(t)
	k, created, err := s.c.PutKey(ctx, "acme/web", "ci@acme-0123abcd.rsa.pub", key.PublicPEM())
	if err != nil || !created || k.Name != "ci@acme-0123abcd.rsa.pub" || len(k.Fingerprint) != 64 {
		t.Fatalf("PutKey: %+v created %v, %v", k, created, err)
	}
	if _, created, err := s.c.PutKey(ctx, "acme/web", "ci@acme-0123abcd.rsa.pub", key.PublicPEM()); err != nil || created {
		t.Fatalf("PutKey again: created %v, %v", created, err)
	}
	keys, err := s.c.Keys(ctx, "acme/web")
	if err != nil || len(keys) != 1 || keys[0] != k {
		t.Fatalf("keys %+v, %v", keys, err)
	}
	app, err := s.c.SetAllowUnsigned(ctx, "acme/web", true)
	if err != nil || !app.AllowUnsigned || len(app.Keys) != 1 {
		t.Fatalf("SetAllowUnsigned: %+v, %v", app, err)
	}
	if app, err = s.c.App(ctx, "acme/web"); err != nil || app.App != "acme/web" || !app.AllowUnsigned {
		t.Fatalf("App: %+v, %v", app, err)
	}
	if err := s.c.DeleteKey(ctx, "acme/web", k.Name); err != nil {
		t.Fatal(err)
	}
	if e := asError(t, s.c.DeleteKey(ctx, "acme/web", k.Name)); e.Status != http.StatusNotFound || e.Code != api.CodeNotFound {
		t.Fatalf("deleting again: %+v", e)
	}
}

// TestErrors: every error answer is one *Error with the body's fields;
// a 409 of a running operation names it.
func TestErrors(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	s.publish(t)
	v := s.install(t)

	_, err := s.c.SetChannel(ctx, "web", api.Channel{Commit: commitA})
	e := asError(t, err)
	if !e.Busy() || e.Status != http.StatusConflict || e.Operation != v.LastOperation.ID {
		t.Fatalf("busy: %+v", e)
	}
	_, err = s.c.DeleteInstallation(ctx, "web")
	if e := asError(t, err); !e.Busy() || e.Operation != v.LastOperation.ID {
		t.Fatalf("busy delete: %+v", e)
	}
	_, err = s.c.Installation(ctx, "nope")
	if e := asError(t, err); e.Busy() || e.Status != http.StatusNotFound || e.Code != api.CodeNotFound || e.Message == "" {
		t.Fatalf("unknown installation: %+v", e)
	}
	_, err = client.New(s.URL, "wrong").Installations(ctx)
	if e := asError(t, err); e.Status != http.StatusUnauthorized || e.Code != "unauthorized" {
		t.Fatalf("wrong token: %+v", e)
	}
	if _, err := s.c.SetChannel(ctx, "web", api.Channel{Branch: "main", Tag: "v1"}); err == nil || errors.As(err, new(*client.Error)) {
		t.Fatalf("two refs: %v, want a local error", err)
	}

	// An answer that is not the API's (a proxy's page) keeps its text.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/installations" {
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer proxy.Close()
	_, err = client.New(proxy.URL, admintest.Token).Installations(ctx)
	if e := asError(t, err); e.Status != http.StatusBadGateway || e.Code != "error" || e.Message != "bad gateway" {
		t.Fatalf("proxy page: %+v", e)
	}
	_, err = client.New(proxy.URL, admintest.Token).History(ctx, "web")
	if e := asError(t, err); e.Status != http.StatusServiceUnavailable || e.Message != "503 Service Unavailable" {
		t.Fatalf("empty answer: %+v", e)
	}
}

// TestInstallationsAndWatch: the installation calls, and Watch following
// an operation to its end through the event stream.
func TestInstallationsAndWatch(t *testing.T) {
	defer func(d time.Duration) { admin.EventsPoll = d }(admin.EventsPoll)
	admin.EventsPoll = 5 * time.Millisecond
	s := newSite(t)
	ctx := context.Background()
	s.publish(t)
	v := s.install(t)
	id := v.LastOperation.ID
	list, err := s.c.Installations(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "web" || list[0].Pending == nil {
		t.Fatalf("installations %+v, %v", list, err)
	}
	h, err := s.c.History(ctx, "web")
	if err != nil || len(h) != 1 || h[0].Operation != id {
		t.Fatalf("history %+v, %v", h, err)
	}
	ops, err := s.c.Operations(ctx, "web")
	if err != nil || len(ops) != 1 || ops[0].ID != id {
		t.Fatalf("operations %+v, %v", ops, err)
	}

	// The operation runs its one step while Watch follows it.
	done := make(chan struct{})
	defer func() { <-done }()
	go func() {
		defer close(done)
		for _, fn := range []func(o *operation.Operation){
			func(o *operation.Operation) {
				o.State = operation.Running
				o.Steps = []operation.Step{{Name: "resolve", State: operation.StepRunning}}
			},
			func(o *operation.Operation) { o.Lease = &operation.Lease{Holder: "x", Token: 1} },
			func(o *operation.Operation) {
				o.Steps[0].State, o.State = operation.StepDone, operation.Succeeded
				o.Recount()
			},
		} {
			time.Sleep(50 * time.Millisecond)
			s.Installations.Update(ctx, id, func(o *operation.Operation) error { fn(o); return nil })
		}
	}()
	var seen []api.State
	final, err := s.c.Watch(ctx, id, func(op *api.Operation) { seen = append(seen, op.State) })
	if err != nil || final.State != api.Succeeded || final.Progress != (api.Progress{Done: 1, Total: 1}) {
		t.Fatalf("Watch: %+v, %v", final, err)
	}
	if len(seen) != 3 || seen[0] != api.Queued || seen[1] != api.Running || seen[2] != api.Succeeded {
		t.Fatalf("states seen: %v", seen)
	}
	op, err := s.c.Operation(ctx, id)
	if err != nil || op.State != api.Succeeded {
		t.Fatalf("operation %+v, %v", op, err)
	}
	_, err = s.c.Watch(ctx, "web.9", nil)
	if e := asError(t, err); e.Status != http.StatusNotFound {
		t.Fatalf("watching an unknown operation: %+v", e)
	}
}
