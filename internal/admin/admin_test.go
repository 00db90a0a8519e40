package admin_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/admin"
	"github.com/uplinkhq/uplink/internal/admin/admintest"
	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/apktest"
)

// The tests of this file run the real API over in-process storage
// (admintest), through HTTP.

const commitA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

type fixture struct {
	t *testing.T
	*admintest.Site
}

func newFixture(t *testing.T) *fixture { return &fixture{t: t, Site: admintest.New(t)} }

// call sends a request with the test token and returns the answer.
func (f *fixture) call(method, path, body string) (int, http.Header, []byte) {
	return f.callAs("Bearer "+admintest.Token, method, path, body)
}

func (f *fixture) callAs(auth, method, path, body string) (int, http.Header, []byte) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.URL+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, resp.Header, b.Bytes()
}

// mustCall is call that expects status and decodes the answer into out.
func (f *fixture) mustCall(status int, method, path, body string, out any) {
	f.t.Helper()
	got, _, b := f.call(method, path, body)
	if got != status {
		f.t.Fatalf("%s %s: %d %s, want %d", method, path, got, b, status)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			f.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// apiError decodes an error answer.
func apiError(t *testing.T, b []byte) api.Error {
	t.Helper()
	var body api.ErrorBody
	if err := json.Unmarshal(b, &body); err != nil || body.Error.Code == "" || body.Error.Message == "" {
		t.Fatalf("not an API error (%v): %s", err, b)
	}
	return body.Error
}

// withInstallation publishes commitA of acme/web on main and declares
// installation web tracking it: one queued change-channel operation.
func (f *fixture) withInstallation() api.Installation {
	f.t.Helper()
	f.mustCall(http.StatusCreated, http.MethodPut, "/api/v1/apps/acme/web/builds/"+commitA+"/x86_64/APKINDEX.tar.gz", "index", nil)
	f.mustCall(http.StatusCreated, http.MethodPost, "/api/v1/apps/acme/web/builds", `{"commit":"`+commitA+`","branch":"main"}`, nil)
	spec, _ := json.Marshal(api.Spec{
		App: "acme/web", Package: "web", Channel: api.Channel{Branch: "main"},
		Instances: api.Instances{Image: "alpine/3.20"}, KeyName: "acme-web.rsa.pub", PublicKey: string(apktest.NewKey(f.t).PublicPEM()),
	})
	var v api.Installation
	f.mustCall(http.StatusCreated, http.MethodPut, "/api/v1/installations/web", string(spec), &v)
	return v
}

// TestAuth: every route wants the bearer token; a missing or wrong one is
// a 401 that says how to authenticate.
func TestAuth(t *testing.T) {
	f := newFixture(t)
	for _, auth := range []string{"", "Bearer", "Bearer wrong", "Basic " + admintest.Token, admintest.Token} {
		status, h, b := f.callAs(auth, http.MethodGet, "/api/v1/installations", "")
		if status != http.StatusUnauthorized || h.Get("WWW-Authenticate") != `Bearer realm="uplink"` || apiError(t, b).Code != "unauthorized" {
			t.Errorf("Authorization %q: %d %q %s", auth, status, h.Get("WWW-Authenticate"), b)
		}
	}
	if status, _, b := f.callAs("bearer "+admintest.Token, http.MethodGet, "/api/v1/installations", ""); status != http.StatusOK {
		t.Errorf("the scheme is case-insensitive: %d %s", status, b)
	}
	if status, _, b := f.call(http.MethodGet, "/api/v1/nope", ""); status != http.StatusNotFound || apiError(t, b).Code != "not_found" {
		t.Errorf("unknown endpoint: %d %s", status, b)
	}
	// An empty token configured is no token.
	e := echo.New()
	admin.New(admin.Config{Tokens: []string{""}, Logger: slog.New(slog.DiscardHandler)}).Register(e)
	req := httptest.NewRequest(http.MethodGet, "/api/v1/openapi.json", nil)
	req.Header.Set("Authorization", "Bearer ")
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code == http.StatusOK {
		t.Error("an empty token is accepted")
	}
}

// TestDecode: JSON bodies are read strictly.
func TestDecode(t *testing.T) {
	f := newFixture(t)
	f.withInstallation()
	for _, tc := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"unknown field", `{"allow_unsigned":true,"colour":"blue"}`, 400, "bad_json"},
		{"trailing data", `{"allow_unsigned":true} {}`, 400, "bad_json"},
		{"trailing brace", `{"allow_unsigned":true}}`, 400, "bad_json"},
		{"empty", ``, 400, "bad_json"},
		{"wrong type", `{"allow_unsigned":"yes"}`, 400, "bad_json"},
		{"not UTF-8", "{\"allow_unsigned\":true,\"x\":\"\xff\"}", 400, "bad_json"},
		{"too large", `{"allow_unsigned":true,"x":"` + strings.Repeat("a", admin.MaxJSONBody) + `"}`, 413, "too_large"},
		{"nothing to change", `{}`, 400, "invalid"},
	} {
		status, _, b := f.call(http.MethodPatch, "/api/v1/apps/acme/web", tc.body)
		if e := apiError(t, b); status != tc.status || e.Code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, b, tc.status, tc.code)
		}
	}
	var app api.App
	f.mustCall(http.StatusOK, http.MethodPatch, "/api/v1/apps/acme/web", `{"allow_unsigned":true}`, &app)
	if app.App != "acme/web" || !app.AllowUnsigned || app.Keys == nil {
		t.Fatalf("PATCH: %+v", app)
	}
}

// TestErrorHandler: an error the table does not know is a 503 whose
// detail stays in the log.
func TestErrorHandler(t *testing.T) {
	var logs bytes.Buffer
	a := admin.New(admin.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	e := echo.New()
	req := httptest.NewRequest(http.MethodGet, "/api/v1/x", nil)
	rec := httptest.NewRecorder()
	a.ErrorHandler(errors.New("disk on fire at /secret/path"), e.NewContext(req, rec))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "5" {
		t.Fatalf("%d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	if e := apiError(t, rec.Body.Bytes()); e.Code != "unavailable" || strings.Contains(rec.Body.String(), "secret") {
		t.Fatalf("body %s", rec.Body)
	}
	if !strings.Contains(logs.String(), "disk on fire") {
		t.Fatalf("the log lacks the detail:\n%s", &logs)
	}
}

// TestInstallationAPI: installations and operations go out as the API
// types, without what the records keep only to run them.
func TestInstallationAPI(t *testing.T) {
	f := newFixture(t)
	v := f.withInstallation()
	op := v.LastOperation
	if v.Name != "web" || op == nil || op.Kind != api.KindChangeChannel || op.State != api.Queued || v.Pending == nil || v.Pending.Operation != op.ID {
		t.Fatalf("created: %+v", v)
	}
	// A replica takes the operation on: a lease and an attempt.
	ctx := context.Background()
	if _, err := f.Installations.Update(ctx, op.ID, func(o *operation.Operation) error {
		o.Lease = &operation.Lease{Holder: "host/1/abc", Token: 7, Expires: time.Now().Add(time.Minute)}
		o.Attempts++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/api/v1/operations/" + op.ID, "/api/v1/operations?installation=web", "/api/v1/installations/web", "/api/v1/installations"} {
		_, _, b := f.call(http.MethodGet, path, "")
		for _, stored := range []string{"lease", "holder", "token", "attempts", "host/1/abc"} {
			if bytes.Contains(b, []byte(`"`+stored)) {
				t.Errorf("GET %s shows %q: %s", path, stored, b)
			}
		}
	}
	var got api.Operation
	f.mustCall(http.StatusOK, http.MethodGet, "/api/v1/operations/"+op.ID, "", &got)
	if got.ID != op.ID || got.To == nil || got.To.Branch != "main" || got.To.Resolved != commitA || got.Commit != commitA {
		t.Fatalf("operation: %+v", got)
	}
	var ops api.Operations
	f.mustCall(http.StatusOK, http.MethodGet, "/api/v1/operations?installation=web", "", &ops)
	if len(ops.Operations) != 1 || ops.Operations[0].ID != op.ID {
		t.Fatalf("operations: %+v", ops)
	}
	var h api.History
	f.mustCall(http.StatusOK, http.MethodGet, "/api/v1/installations/web/history", "", &h)
	if len(h.History) != 1 || h.History[0].To != (api.Channel{Branch: "main"}) || h.History[0].Operation != op.ID || h.History[0].Result != api.Queued {
		t.Fatalf("history: %+v", h)
	}

	// Another change while this one runs: a 409 naming it.
	status, _, b := f.call(http.MethodPut, "/api/v1/installations/web/channel", `{"commit":"`+commitA+`"}`)
	if e := apiError(t, b); status != http.StatusConflict || e.Code != api.CodeOperationRunning || e.Operation != op.ID {
		t.Fatalf("busy: %d %s", status, b)
	}
	status, _, b = f.call(http.MethodPut, "/api/v1/installations/web/channel", `{"branch":"main","tag":"v1"}`)
	if status != http.StatusBadRequest || apiError(t, b).Code != "invalid" {
		t.Fatalf("two refs: %d %s", status, b)
	}
	status, _, b = f.call(http.MethodGet, "/api/v1/operations/web.9", "")
	if status != http.StatusNotFound || apiError(t, b).Code != "not_found" {
		t.Fatalf("unknown operation: %d %s", status, b)
	}
}

// TestEvents: the event stream sends the operation when what the API
// shows of it changes, and nothing when only its lease is renewed.
func TestEvents(t *testing.T) {
	defer func(d time.Duration) { admin.EventsPoll = d }(admin.EventsPoll)
	admin.EventsPoll = 5 * time.Millisecond
	f := newFixture(t)
	id := f.withInstallation().LastOperation.ID
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := f.events(ctx, id)
	next := func(within time.Duration) *api.Operation {
		select {
		case op, ok := <-events:
			if !ok {
				return nil
			}
			return &op
		case <-time.After(within):
			return nil
		}
	}
	if op := next(5 * time.Second); op == nil || op.State != api.Queued {
		t.Fatalf("first event: %+v", op)
	}
	update := func(fn func(o *operation.Operation)) {
		t.Helper()
		if _, err := f.Installations.Update(ctx, id, func(o *operation.Operation) error { fn(o); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	update(func(o *operation.Operation) {
		o.Lease = &operation.Lease{Holder: "a", Token: 1, Expires: time.Now().Add(time.Second)}
		o.Attempts++
	})
	for i := range 5 {
		update(func(o *operation.Operation) { o.Lease.Expires = time.Now().Add(time.Duration(i+2) * time.Second) })
		time.Sleep(4 * admin.EventsPoll)
	}
	if op := next(20 * admin.EventsPoll); op != nil {
		t.Fatalf("lease renewals sent an event: %+v", op)
	}
	update(func(o *operation.Operation) {
		o.State = operation.Running
		o.Steps = []operation.Step{{Name: "resolve", State: operation.StepRunning}}
	})
	if op := next(5 * time.Second); op == nil || op.State != api.Running || len(op.Steps) != 1 || op.Steps[0].State != api.StepRunning {
		t.Fatalf("after a step change: %+v", op)
	}
	update(func(o *operation.Operation) {
		o.Steps[0].State = operation.StepDone
		o.State, o.Error = operation.Failed, "stopped by the test"
	})
	if op := next(5 * time.Second); op == nil || op.State != api.Failed || op.Error != "stopped by the test" {
		t.Fatalf("the end: %+v", op)
	}
	if op, ok := <-events; ok {
		t.Fatalf("the stream goes on after the end: %+v", op)
	}
}

// events reads operation id's event stream; the channel closes when the
// stream ends.
func (f *fixture) events(ctx context.Context, id string) <-chan api.Operation {
	f.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.URL+"/api/v1/operations/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+admintest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		f.t.Fatalf("events: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := make(chan api.Operation, 16)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "operation":
				var op api.Operation
				if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &op) == nil {
					out <- op
				}
			}
		}
	}()
	return out
}
