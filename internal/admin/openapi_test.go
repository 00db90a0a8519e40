package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/storage/filesystem"
)

// TestOpenAPIMatchesRoutes: every admin route is in the OpenAPI document
// served at /api/v1/openapi.json, and every documented route exists.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	const token = "openapi-test-token-0123"
	drv, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	New(Config{Tokens: []string{token}, Keys: distribution.NewKeys(drv)}).Register(e)

	req := httptest.NewRequest(http.MethodGet, "/api/v1/openapi.json", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/v1/openapi.json: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("not an OpenAPI 3.1 document (%v): %.200s", err, rec.Body.String())
	}
	var documented []string
	for path, methods := range doc.Paths {
		for m := range methods {
			documented = append(documented, strings.ToUpper(m)+" "+path)
		}
	}
	param := regexp.MustCompile(`:(\w+)`)
	var registered []string
	for _, r := range e.Routes() {
		if !strings.HasPrefix(r.Path, "/api/v1/") || strings.HasSuffix(r.Path, "/*") {
			continue // the catch-all answers 404
		}
		registered = append(registered, r.Method+" "+param.ReplaceAllString(r.Path, "{$1}"))
	}
	slices.Sort(documented)
	slices.Sort(registered)
	for _, r := range registered {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(registered, d) {
			t.Errorf("openapi.json documents %s, which no route serves", d)
		}
	}
	if len(registered) < 20 {
		t.Fatalf("only %d routes registered: %q", len(registered), registered)
	}
}

// TestOpenAPIShapes: the schemas of the document name exactly the fields
// the API's types send.
func TestOpenAPIShapes(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{"Operation": api.Operation{}, "Endpoint": api.Endpoint{}, "Channel": api.Channel{}} {
		var documented []string
		for p := range doc.Components.Schemas[name].Properties {
			documented = append(documented, p)
		}
		sent := jsonFields(reflect.TypeOf(v))
		slices.Sort(documented)
		slices.Sort(sent)
		if !slices.Equal(documented, sent) {
			t.Errorf("schema %s documents %q; api.%s sends %q", name, documented, name, sent)
		}
	}
}

// jsonFields lists the JSON names of a struct's fields, embedded ones
// included.
func jsonFields(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case f.Anonymous && name == "":
			out = append(out, jsonFields(f.Type)...)
		case name != "-" && name != "":
			out = append(out, name)
		}
	}
	return out
}
