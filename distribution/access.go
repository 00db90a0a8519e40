package distribution

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
)

// Authorizer decides per app whether a client may fetch (e.g. only
// instances leased an address in the app's Incus project). An error means
// it cannot tell now.
type Authorizer interface {
	Allowed(ctx context.Context, app artifact.App, client netip.Addr) (bool, error)
}

// ErrForbidden is Access refusing a client (the handler answers 403). An
// Authorizer refuses by answering false, never with an error.
var ErrForbidden = errors.New("forbidden")

// ErrUndecided is an access check that could not be made: 503, so that
// a failing check never lets a client through nor turns it away for good.
var ErrUndecided = errors.New("cannot check access now")

// Access is the access-check decorator of a Protocol: an allow-list of
// client prefixes, applied before a request is read, and a per-app
// Authorizer, applied when the request names its app (Resolve, Keys).
type Access struct {
	Protocol
	allow []netip.Prefix
	auth  Authorizer
}

// NewAccess guards inner. An empty allow admits every address, a nil
// auth every client of an app.
func NewAccess(inner Protocol, allow []netip.Prefix, auth Authorizer) *Access {
	return &Access{Protocol: inner, allow: allow, auth: auth}
}

// Admit refuses an address outside the allow-list.
func (a *Access) Admit(client netip.Addr) error {
	if len(a.allow) > 0 && !a.listed(client) {
		return ErrForbidden
	}
	return a.Protocol.Admit(client)
}

func (a *Access) listed(client netip.Addr) bool {
	for _, p := range a.allow {
		if p.Contains(client) {
			return true
		}
	}
	return false
}

// Resolve asks the Authorizer first.
func (a *Access) Resolve(ctx context.Context, req Request) (ref.Resolution, error) {
	if err := a.authorize(ctx, req.Application(), req.Client); err != nil {
		return ref.Resolution{}, err
	}
	return a.Protocol.Resolve(ctx, req)
}

// Keys asks the Authorizer first.
func (a *Access) Keys(ctx context.Context, app artifact.App, client netip.Addr) (AppSettings, bool, error) {
	if err := a.authorize(ctx, app, client); err != nil {
		return AppSettings{}, false, err
	}
	return a.Protocol.Keys(ctx, app, client)
}

func (a *Access) authorize(ctx context.Context, app artifact.App, client netip.Addr) error {
	if a.auth == nil {
		return nil
	}
	ok, err := a.auth.Allowed(ctx, app, client)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUndecided, err)
	}
	if !ok {
		return ErrForbidden
	}
	return nil
}
