package incus

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
)

// Leases admits only addresses leased to an instance in a project of one
// of the app's installations; DHCPv6 and gateway entries (which Incus does
// not filter by project) never admit, and a failed lookup is an error
// (503), not a refusal or a pass.
func TestLeasesAllowed(t *testing.T) {
	f := newFake(t, DialectIncus)
	f.reply("GET /1.0/networks", 200, syncBody(`[{"name":"incusbr0","type":"bridge","managed":true},{"name":"eth0","type":"physical","managed":false}]`))
	var lookups atomic.Int64
	f.handle("GET /1.0/networks/incusbr0/leases", func(w http.ResponseWriter, r *http.Request) {
		lookups.Add(1)
		if r.URL.Query().Get("project") == "broken" {
			writeBody(w, 500, errorBody(500, "database is locked"))
			return
		}
		writeBody(w, 200, syncBody(`[
{"hostname":"web-1-1","hwaddr":"00:16:3e:2c:89:d9","address":"10.0.3.17","type":"dynamic","project":"acme"},
{"hostname":"web-1-1","hwaddr":"","address":"fd42::17","type":"dynamic"},
{"hostname":"incusbr0.gw","hwaddr":"","address":"10.0.3.1","type":"gateway"},
{"hostname":"other","hwaddr":"00:16:3e:00:00:01","address":"10.0.3.99","type":"dynamic","project":"other"}]`))
	})
	c := f.connect()
	projects := map[string][]string{"acme/hello": {"acme"}, "acme/broken": {"broken"}}
	l := &Leases{Client: c, Projects: func(_ context.Context, app artifact.App) ([]string, error) {
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
	if n := lookups.Load(); n != 1 {
		t.Errorf("%d lease lookups for 5 requests within the cache time", n)
	}
	if ok, err := l.Allowed(testCtx(t), artifact.App{Org: "acme", Name: "nope"}, netip.MustParseAddr("10.0.3.17")); ok || err != nil {
		t.Errorf("an app without installations: %v, %v", ok, err)
	}
	ok, err := l.Allowed(testCtx(t), artifact.App{Org: "acme", Name: "broken"}, netip.MustParseAddr("10.0.3.17"))
	if err == nil || ok {
		t.Errorf("a failed lookup must be an error, got %v, %v", ok, err)
	}
	// Until the server passes Leases as the Authorizer, Authorize maps a
	// refusal to distribution.ErrForbidden.
	if err := l.Authorize(testCtx(t), hello, netip.MustParseAddr("192.0.2.1")); !errors.Is(err, distribution.ErrForbidden) {
		t.Errorf("Authorize of an unleased address: %v", err)
	}
}
