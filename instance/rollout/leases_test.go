package rollout

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/instance/incus"
)

// Leases admits only addresses leased to an instance in a project of one
// of the app's installations; DHCPv6 and gateway entries (which Incus does
// not filter by project) never admit, and a failed lookup is an error
// (503), not a refusal or a pass.
func TestLeasesAllowed(t *testing.T) {
	nets := []incus.Network{{Name: "incusbr0", Type: "bridge", Managed: true}, {Name: "eth0", Type: "physical"}}
	acme := &fakeIncus{project: "acme", networks: nets, leases: map[string][]incus.NetworkLease{"incusbr0": {
		{Hostname: "web-1-1", Hwaddr: "00:16:3e:2c:89:d9", Address: "10.0.3.17", Type: "dynamic", Project: "acme"},
		{Hostname: "web-1-1", Address: "fd42::17", Type: "dynamic"},
		{Hostname: "incusbr0.gw", Address: "10.0.3.1", Type: "gateway"},
		{Hostname: "other", Hwaddr: "00:16:3e:00:00:01", Address: "10.0.3.99", Type: "dynamic", Project: "other"},
	}}}
	broken := &fakeIncus{project: "broken", err: incus.StatusErrorf(500, "database is locked")}
	projects := map[string][]string{"acme/hello": {"acme"}, "acme/broken": {"broken"}}
	l := &Leases{Incus: projectsOf(acme, broken), Projects: func(_ context.Context, app artifact.App) ([]string, error) {
		return projects[app.String()], nil
	}}
	hello := artifact.App{Org: "acme", Name: "hello"}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"10.0.3.17", true},
		{"fd42::17", false},
		{"10.0.3.1", false},
		{"10.0.3.99", false},
		{"192.0.2.1", false},
	} {
		if ok, err := l.Allowed(testCtx(t), hello, netip.MustParseAddr(tc.addr)); ok != tc.want || err != nil {
			t.Errorf("%s: %v, %v, want %v", tc.addr, ok, err, tc.want)
		}
	}
	if n := acme.count("leases"); n != 1 {
		t.Errorf("%d lease lookups for 5 requests within the cache time", n)
	}
	if ok, err := l.Allowed(testCtx(t), artifact.App{Org: "acme", Name: "nope"}, netip.MustParseAddr("10.0.3.17")); ok || err != nil {
		t.Errorf("an app without installations: %v, %v", ok, err)
	}
	ok, err := l.Allowed(testCtx(t), artifact.App{Org: "acme", Name: "broken"}, netip.MustParseAddr("10.0.3.17"))
	if err == nil || ok {
		t.Errorf("a failed lookup must be an error, got %v, %v", ok, err)
	}
}

// A lookup is cached for TTL, then made again.
func TestLeasesExpire(t *testing.T) {
	acme := &fakeIncus{project: "acme", networks: []incus.Network{{Name: "incusbr0", Managed: true}}}
	l := &Leases{Incus: projectsOf(acme), TTL: 20 * time.Millisecond, Projects: func(context.Context, artifact.App) ([]string, error) {
		return []string{"acme"}, nil
	}}
	app, addr := artifact.App{Org: "acme", Name: "hello"}, netip.MustParseAddr("10.0.3.17")
	for range 3 {
		if ok, err := l.Allowed(testCtx(t), app, addr); ok || err != nil {
			t.Fatalf("%v %v", ok, err)
		}
	}
	time.Sleep(30 * time.Millisecond)
	if _, err := l.Allowed(testCtx(t), app, addr); err != nil {
		t.Fatal(err)
	}
	if n := acme.count("leases"); n != 2 {
		t.Errorf("%d lookups: want one, then one after the TTL", n)
	}
}
