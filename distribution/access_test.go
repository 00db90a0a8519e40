package distribution_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
)

// open is a Protocol that lets everything through and counts resolutions.
type open struct {
	distribution.Protocol
	resolved, keys int
}

func (o *open) Admit(netip.Addr) error { return nil }
func (o *open) Resolve(context.Context, distribution.Request) (ref.Resolution, error) {
	o.resolved++
	return ref.Resolution{Kind: ref.KindCommit}, nil
}
func (o *open) Keys(context.Context, artifact.App, netip.Addr) (distribution.AppSettings, bool, error) {
	o.keys++
	return distribution.AppSettings{}, true, nil
}

func TestAccessAllowList(t *testing.T) {
	inner := &open{}
	a := distribution.NewAccess(inner, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}, nil)
	for addr, want := range map[string]error{"10.1.2.3": nil, "fd00::1": nil, "192.0.2.1": distribution.ErrForbidden, "::1": distribution.ErrForbidden} {
		if err := a.Admit(netip.MustParseAddr(addr)); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", addr, err, want)
		}
	}
	if err := distribution.NewAccess(inner, nil, nil).Admit(netip.MustParseAddr("192.0.2.1")); err != nil {
		t.Errorf("no allow-list: %v", err)
	}
}

func TestAccessAuthorizer(t *testing.T) {
	inner := &open{}
	auth := &authorizer{}
	a := distribution.NewAccess(inner, nil, auth)
	client := netip.MustParseAddr("10.1.2.3")
	req := distribution.Request{Ref: "main", Org: "acme", App: "hello", Arch: "x86_64", File: "APKINDEX.tar.gz", Client: client}
	for _, tc := range []struct {
		verdict verdict
		want    error
	}{{allow, nil}, {refuse, distribution.ErrForbidden}, {undecided, distribution.ErrUndecided}} {
		auth.verdict = tc.verdict
		before := inner.resolved
		_, err := a.Resolve(t.Context(), req)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("resolve, verdict %v: %v, want %v", tc.verdict, err, tc.want)
		}
		if passed := inner.resolved > before; passed != (tc.want == nil) {
			t.Errorf("resolve, verdict %v: reached the inner Protocol: %v", tc.verdict, passed)
		}
		if auth.client != client || auth.app.String() != "acme/hello" {
			t.Errorf("asked about %v for %v", auth.app, auth.client)
		}
		if _, _, err := a.Keys(t.Context(), req.Application(), client); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("keys, verdict %v: %v, want %v", tc.verdict, err, tc.want)
		}
	}
	if errors.Is(distribution.ErrUndecided, distribution.ErrForbidden) {
		t.Error("undecided is a refusal")
	}
}
