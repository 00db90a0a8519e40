package instance

import (
	"errors"
	"fmt"
)

// The kinds of error the instance domain returns; the admin API maps each
// to one status (internal/admin/errors.go).
var (
	// ErrNotFound: no such installation or operation.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: a request that breaks a rule of names or specs (400).
	ErrInvalid = errors.New("invalid")
)

// NotFoundError names what is missing; it is an ErrNotFound.
type NotFoundError struct{ What string }

func (e *NotFoundError) Error() string        { return e.What + " not found" }
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// BusyError refuses a change while another operation runs.
type BusyError struct{ Running string }

func (e *BusyError) Error() string {
	return "operation " + e.Running + " is running for this installation; wait for it to end"
}

// UnusableError is a request that refers to something that exists in a
// form that cannot be used (422).
type UnusableError struct{ Msg string }

func (e *UnusableError) Error() string { return e.Msg }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func notFound(name string) error { return &NotFoundError{What: "installation " + name} }

func opNotFound(id string) error { return &NotFoundError{What: "operation " + id} }
