// Package storage is uplink's only durable state: artifacts (the APK
// repositories CI builds) and metadata (refs, builds, installations,
// operations). Drivers implement Driver; everything else composes on top.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Info describes one stored object.
type Info struct {
	Key     string
	Size    int64
	ModTime time.Time
	// ETag is an opaque version token: it changes whenever the bytes under
	// Key change, and it is what Condition.IfMatch compares against.
	ETag string
}

// Object is an open object. Reads and seeks may go to the backend lazily,
// so a Range request reads only the bytes it asks for.
type Object interface {
	io.ReadSeekCloser
	Info() Info
}

// Condition makes a Put a compare-and-swap. The zero value is an
// unconditional put.
type Condition struct {
	// IfAbsent: succeed only when Key does not exist yet.
	IfAbsent bool
	// IfMatch: succeed only when Key exists with this ETag.
	IfMatch string
}

// Getter reads objects.
type Getter interface {
	// Open returns the object with its size and modification time.
	Open(ctx context.Context, key string) (Object, error)
	Stat(ctx context.Context, key string) (Info, error)
}

// Putter writes objects. Writes are atomic: a reader sees the old bytes or
// the new ones, never a part. size is -1 when unknown.
type Putter interface {
	Put(ctx context.Context, key string, r io.Reader, size int64, cond Condition) (Info, error)
}

// Lister lists objects whose key starts with prefix (a plain string
// prefix, not only a directory), recursively, sorted by key.
type Lister interface {
	List(ctx context.Context, prefix string) ([]Info, error)
}

// Deleter removes objects. Deleting a missing key is not an error.
type Deleter interface {
	Delete(ctx context.Context, key string) error
}

// Presigner is optional: a driver whose objects clients can fetch
// themselves (S3) returns a URL that GETs key without credentials until
// expiry passes. Callers find it with a type assertion on the driver.
type Presigner interface {
	PresignGet(ctx context.Context, key string, expiry time.Duration) (*url.URL, error)
}

// Driver is the whole storage contract; storagetest checks it.
type Driver interface {
	Getter
	Putter
	Lister
	Deleter
}

// ErrNotFound matches (errors.Is) every not-found error of every driver.
var ErrNotFound = errors.New("storage: not found")

// ErrConditionFailed is returned by a conditional Put whose condition does
// not hold.
var ErrConditionFailed = errors.New("storage: condition failed")

// ErrInvalidKey is returned for a key that ValidKey rejects.
var ErrInvalidKey = errors.New("storage: invalid key")

// PathNotFoundError is the typed not-found error.
type PathNotFoundError struct {
	Key string
}

func (e *PathNotFoundError) Error() string { return fmt.Sprintf("storage: %s: not found", e.Key) }

// Is makes errors.Is(err, ErrNotFound) hold.
func (e *PathNotFoundError) Is(target error) bool { return target == ErrNotFound }

// IsNotFound reports whether err means the object does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// MaxKeyLength bounds keys well below S3's 1024-byte limit.
const MaxKeyLength = 900

// ValidKey checks that key is a relative, clean, '/'-separated path of
// valid UTF-8 (S3 accepts nothing else): no empty, "." or ".." segment, no
// segment starting with '.', no backslash, NUL or other control character.
// Drivers call it before touching the backend, so no key can reach outside
// the store.
func ValidKey(key string) error {
	if key == "" || len(key) > MaxKeyLength || !utf8.ValidString(key) {
		return fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg[0] == '.' {
			return fmt.Errorf("%w: %q", ErrInvalidKey, key)
		}
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return fmt.Errorf("%w: %q", ErrInvalidKey, key)
		}
	}
	return nil
}

// ValidPrefix checks a List prefix: empty, or a key-like string that may
// end in '/' or in a partial segment.
func ValidPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return ValidKey(strings.TrimSuffix(prefix, "/"))
}
