package admin_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/uplinkhq/uplink/internal/api"
)

// TestRetentionSettings: PATCH changes the fields it gives and keeps the
// others; bad values are 400 and change nothing.
func TestRetentionSettings(t *testing.T) {
	f := newFixture(t)
	const path = "/api/v1/apps/acme/hello"
	patch := func(body string, want int) api.App {
		t.Helper()
		status, _, b := f.call(http.MethodPatch, path, body)
		if status != want {
			t.Fatalf("PATCH %s: %d %s, want %d", body, status, b, want)
		}
		var app api.App
		if want == http.StatusOK {
			if err := json.Unmarshal(b, &app); err != nil {
				t.Fatal(err)
			}
		}
		return app
	}
	app := patch(`{"retention":{"keep_builds":5,"keep_age":"48h"}}`, http.StatusOK)
	if r := app.Retention; r.KeepBuilds == nil || *r.KeepBuilds != 5 || r.KeepAge != "48h0m0s" || r.KeepOperations != nil {
		t.Fatalf("after the first PATCH: %+v", r)
	}
	app = patch(`{"retention":{"keep_operations":0}}`, http.StatusOK)
	if r := app.Retention; r.KeepBuilds == nil || *r.KeepBuilds != 5 || r.KeepAge != "48h0m0s" || r.KeepOperations == nil || *r.KeepOperations != 0 {
		t.Fatalf("a PATCH of one field changed another: %+v", r)
	}
	for _, bad := range []string{
		`{"retention":{"keep_age":"a week"}}`, `{"retention":{"keep_age":"-1h"}}`,
		`{"retention":{"keep_builds":-1}}`, `{"retention":{"keep_operations":100000}}`,
		`{"retention":{"keep_everything":true}}`, `{}`,
	} {
		patch(bad, http.StatusBadRequest)
	}
	status, _, b := f.call(http.MethodGet, path, "")
	if status != http.StatusOK || !strings.Contains(string(b), `"keep_builds":5`) || !strings.Contains(string(b), `"keep_age":"48h0m0s"`) {
		t.Fatalf("GET after refused PATCHes: %d %s", status, b)
	}
}

// TestRetentionBadInput: deletes and prunes of bad names answer 400 or
// 404, never 500.
func TestRetentionBadInput(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		method, path, body string
		want               int
	}{
		{http.MethodDelete, "/api/v1/apps/acme/hello/branches/main", "", http.StatusNotFound},
		{http.MethodDelete, "/api/v1/apps/acme/hello/branches/a..b", "", http.StatusBadRequest},
		{http.MethodDelete, "/api/v1/apps/acme/hello/builds/xyz", "", http.StatusBadRequest},
		{http.MethodDelete, "/api/v1/apps/acme/hello/builds/" + commitA, "", http.StatusNotFound},
		{http.MethodPut, "/api/v1/apps/acme/hello/tags/v1", `{"commit":"` + commitA + `"}`, http.StatusNotFound},
		{http.MethodPut, "/api/v1/apps/acme/hello/tags/v1", `{"sha":"x"}`, http.StatusBadRequest},
		{http.MethodPost, "/api/v1/apps/acme/hello/prune", `{"dry_run":"yes"}`, http.StatusBadRequest},
		{http.MethodPost, "/api/v1/apps/acme/hello/prune", `{"dry_run":true}`, http.StatusOK},
		{http.MethodPost, "/api/v1/apps/-bad/hello/prune", `{"dry_run":true}`, http.StatusBadRequest},
	} {
		status, _, b := f.call(c.method, c.path, c.body)
		if status != c.want {
			t.Errorf("%s %s %s: %d %s, want %d", c.method, c.path, c.body, status, b, c.want)
		}
	}
}
