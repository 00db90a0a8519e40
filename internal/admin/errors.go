package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/storage"
)

// Error is an API error: a status and docs/api.md's error body.
type Error struct {
	Status int
	Body   api.Error
}

func (e *Error) Error() string { return e.Body.Message }

func errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Body: api.Error{Code: code, Message: fmt.Sprintf(format, args...)}}
}

// errorKind is one kind of error and the answer it gets: its status, its
// code and, for the few kinds that carry more, detail. match returns the
// error whose message is shown: the matched kind's own, not a wrapper's.
type errorKind struct {
	match  func(error) (error, bool)
	status int
	code   string
	detail func(matched error, e *api.Error)
}

// errorKinds maps each domain's error kinds, then request decoding's, to
// docs/api.md's statuses and codes; the first match wins.
var errorKinds = []errorKind{
	{as[*ref.MissingIndexError], http.StatusUnprocessableEntity, "missing", nil},
	{as[*distribution.ValidationError], http.StatusUnprocessableEntity, "", validationDetail},
	{as[*distribution.ImmutableError], http.StatusConflict, "immutable", nil},
	{as[*distribution.BodyError], http.StatusBadRequest, "bad_body", nil},
	{as[*instance.BusyError], http.StatusConflict, api.CodeOperationRunning, busyDetail},
	{as[*instance.UnusableError], http.StatusUnprocessableEntity, "unusable", nil},
	{as[*ref.AmbiguousError], http.StatusConflict, "ambiguous_ref", nil},
	{as[*ref.InUseError], http.StatusConflict, api.CodeInUse, inUseDetail},
	{as[*ref.DeletingError], http.StatusConflict, "deleting", nil},
	{is(ref.ErrNotFound), http.StatusNotFound, api.CodeNotFound, nil},
	{is(instance.ErrNotFound), http.StatusNotFound, api.CodeNotFound, nil},
	{is(artifact.ErrInvalid), http.StatusBadRequest, api.CodeInvalid, nil},
	{is(instance.ErrInvalid), http.StatusBadRequest, api.CodeInvalid, nil},
	{is(storage.ErrInvalidKey), http.StatusBadRequest, api.CodeInvalid, nil},

	{badJSON, http.StatusBadRequest, "bad_json", badJSONDetail},
}

func is(target error) func(error) (error, bool) {
	return func(err error) (error, bool) { return err, errors.Is(err, target) }
}

func as[T error](err error) (error, bool) {
	var t T
	ok := errors.As(err, &t)
	return t, ok
}

// badJSON is a body the JSON decoder refused.
func badJSON(err error) (error, bool) {
	_, syn := as[*json.SyntaxError](err)
	_, typ := as[*json.UnmarshalTypeError](err)
	return err, syn || typ || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, errBadJSON)
}

// busyDetail names the running operation, so a client can follow it.
func busyDetail(matched error, e *api.Error) {
	e.Operation = matched.(*instance.BusyError).Running
}

// validationDetail lists why a publish was refused; its code says how.
func validationDetail(matched error, e *api.Error) {
	val := matched.(*distribution.ValidationError)
	e.Code, e.Omitted = val.Code, val.Omitted
	e.Problems = mapSlice(val.Problems, func(p distribution.Problem) api.Problem { return api.Problem(p) })
}

// badJSONDetail shows the whole error: the decoder's message is the detail.
func badJSONDetail(_ error, e *api.Error) {
	e.Message = "request body is not valid JSON: " + e.Message
}

// toError maps an error to its answer: the API's own errors, the
// transport's, then errorKinds. Anything unrecognised is a dependency
// failing, not the client's fault, and its detail stays in the log.
func toError(err error) *Error {
	var (
		e   *Error
		he  *echo.HTTPError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, "too_large", "request body larger than %d bytes", mbe.Limit)
	case errors.As(err, &he):
		msg := http.StatusText(he.Code)
		if s, ok := he.Message.(string); ok {
			msg = s
		}
		return errorf(he.Code, codeFor(he.Code), "%s", msg)
	}
	for _, k := range errorKinds {
		if matched, ok := k.match(err); ok {
			out := errorf(k.status, k.code, "%s", matched.Error())
			if k.detail != nil {
				k.detail(matched, &out.Body)
			}
			return out
		}
	}
	return errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "storage unavailable, try again later")
}

// Describe is the API's answer to err: its status and error body (code,
// message and, for a 409 operation_running, the running operation), for
// the console to say in words what the API says in codes.
func Describe(err error) (int, api.Error) {
	e := toError(err)
	return e.Status, e.Body
}

// codeFor is the code of an error Echo itself answers (routing, binding).
func codeFor(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "bad_request"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusConflict:
		return "conflict"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusUnsupportedMediaType:
		return "unsupported_media_type"
	}
	return "error"
}
