package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/storage"
)

const commitA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// TestErrorTable: each domain's error kinds, wrapped or not, get
// docs/api.md's status and code; the kinds that carry more say it.
func TestErrorTable(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("doing something: %w", err) }
	busy := &instance.BusyError{Running: "web.3"}
	val := &distribution.ValidationError{Code: "signature", Problems: []distribution.Problem{{Arch: "x86_64", File: "x86_64/APKINDEX.tar.gz", Kind: "untrusted", Problem: "no trusted key"}}, Omitted: 2}
	for _, tc := range []struct {
		err     error
		status  int
		code    string
		message string // when not err.Error()
	}{
		{ref.ErrNotFound, 404, "not_found", ""},
		{wrap(instance.ErrNotFound), 404, "not_found", ""},
		{&instance.NotFoundError{What: "installation web"}, 404, "not_found", ""},
		{wrap(artifact.ErrInvalid), 400, "invalid", ""},
		{wrap(instance.ErrInvalid), 400, "invalid", ""},
		{wrap(storage.ErrInvalidKey), 400, "invalid", ""},
		{wrap(&ref.AmbiguousError{}), 409, "ambiguous_ref", (&ref.AmbiguousError{}).Error()},
		{wrap(busy), 409, api.CodeOperationRunning, busy.Error()},
		{wrap(&ref.MissingIndexError{Prefix: "deployments/acme/web/" + commitA + "/"}), 422, "missing", (&ref.MissingIndexError{Prefix: "deployments/acme/web/" + commitA + "/"}).Error()},
		{wrap(&instance.UnusableError{Msg: "channel branch x: nothing published"}), 422, "unusable", "channel branch x: nothing published"},
		{wrap(val), 422, "signature", val.Error()},
		{fmt.Errorf("%w: trailing data", errBadJSON), 400, "bad_json", "request body is not valid JSON: bad JSON: trailing data"},
		{&json.SyntaxError{}, 400, "bad_json", "request body is not valid JSON: "},
		{io.ErrUnexpectedEOF, 400, "bad_json", "request body is not valid JSON: unexpected EOF"},
		{&http.MaxBytesError{Limit: 10}, 413, "too_large", "request body larger than 10 bytes"},
		{echo.ErrMethodNotAllowed, 405, "method_not_allowed", "Method Not Allowed"},
		{errorf(418, "teapot", "short and stout"), 418, "teapot", "short and stout"},
		{errors.New("connection refused"), 503, "unavailable", "storage unavailable, try again later"},
	} {
		e := toError(tc.err)
		want := tc.message
		if want == "" {
			want = tc.err.Error()
		}
		if e.Status != tc.status || e.Body.Code != tc.code || e.Body.Message != want {
			t.Errorf("%T %v: %d %q %q, want %d %q %q", tc.err, tc.err, e.Status, e.Body.Code, e.Body.Message, tc.status, tc.code, want)
		}
	}
	if e := toError(wrap(busy)); e.Body.Operation != "web.3" {
		t.Errorf("busy: operation %q", e.Body.Operation)
	}
	e := toError(wrap(val))
	if len(e.Body.Problems) != 1 || e.Body.Problems[0] != (api.Problem{Arch: "x86_64", File: "x86_64/APKINDEX.tar.gz", Kind: "untrusted", Problem: "no trusted key"}) || e.Body.Omitted != 2 {
		t.Errorf("validation: %+v", e.Body)
	}
}
