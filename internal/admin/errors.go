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
	"github.com/uplinkhq/uplink/storage"
)

// Error is an API error: API.md's {"error":{"code","message"}} with a
// status.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// Operation names the running operation of a 409.
	Operation string `json:"operation,omitempty"`
	// Problems lists why a publish was refused (422).
	Problems []distribution.Problem `json:"problems,omitempty"`
	// Omitted counts the problems beyond those listed.
	Omitted int `json:"omitted,omitempty"`
}

func (e *Error) Error() string { return e.Message }

func errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// toError maps what the domain packages return to a status and a code.
// Anything unrecognised is a dependency failing, not the client's fault,
// and its detail stays in the log.
func toError(err error) *Error {
	var (
		e    *Error
		he   *echo.HTTPError
		mi   *ref.MissingIndexError
		mbe  *http.MaxBytesError
		syn  *json.SyntaxError
		typ  *json.UnmarshalTypeError
		amb  *ref.AmbiguousError
		busy *instance.BusyError
		unus *instance.UnusableError
		val  *distribution.ValidationError
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
	case errors.As(err, &mi):
		return errorf(http.StatusUnprocessableEntity, "missing", "%s", mi.Error())
	case errors.As(err, &val):
		e := errorf(http.StatusUnprocessableEntity, val.Code, "%s", val.Error())
		e.Problems, e.Omitted = val.Problems, val.Omitted
		return e
	case errors.As(err, &busy):
		e := errorf(http.StatusConflict, "operation_running", "%s", busy.Error())
		e.Operation = busy.Running
		return e
	case errors.As(err, &unus):
		return errorf(http.StatusUnprocessableEntity, "unusable", "%s", unus.Error())
	case errors.As(err, &amb):
		return errorf(http.StatusConflict, "ambiguous_ref", "%s", amb.Error())
	case errors.Is(err, ref.ErrNotFound), errors.Is(err, instance.ErrNotFound):
		return errorf(http.StatusNotFound, "not_found", "%s", err.Error())
	case errors.Is(err, artifact.ErrInvalid), errors.Is(err, instance.ErrInvalid), errors.Is(err, storage.ErrInvalidKey):
		return errorf(http.StatusBadRequest, "invalid", "%s", err.Error())
	case errors.As(err, &syn), errors.As(err, &typ), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, errBadJSON):
		return errorf(http.StatusBadRequest, "bad_json", "request body is not valid JSON: %s", err.Error())
	}
	return errorf(http.StatusServiceUnavailable, "unavailable", "storage unavailable, try again later")
}

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
