package rollout

import (
	"context"
	"net/netip"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/uplinkhq/uplink/distribution/artifact"
)

// Leases admits a distribution client only if its address is leased by
// an Incus network of a project that runs an installation of the app
// (the original uplink's rule). Lookups are cached briefly.
type Leases struct {
	Incus Projects
	// Projects names the projects of an app's installations.
	Projects func(ctx context.Context, app artifact.App) ([]string, error)
	TTL      time.Duration

	once     sync.Once
	projects *lru.Cache[artifact.App, fresh[[]string]]
	leased   *lru.Cache[string, fresh[map[netip.Addr]bool]] // by project
	sf       singleflight.Group
}

// leaseCacheSize bounds each cache: far more apps and projects than an
// uplink serves, so that only a flood of unknown apps evicts.
const leaseCacheSize = 4096

// fresh is a cached value until it expires. A plain LRU, not golang-lru's
// expirable one: v2.0.7's starts a cleanup goroutine that cannot be
// stopped.
type fresh[V any] struct {
	v       V
	expires time.Time
}

// Allowed is distribution's Authorizer: it reports whether client holds a
// lease in a project of one of app's installations; an error means it
// could not decide.
func (l *Leases) Allowed(ctx context.Context, app artifact.App, client netip.Addr) (bool, error) {
	l.once.Do(func() {
		if l.TTL <= 0 {
			l.TTL = 10 * time.Second
		}
		l.projects, _ = lru.New[artifact.App, fresh[[]string]](leaseCacheSize)
		l.leased, _ = lru.New[string, fresh[map[netip.Addr]bool]](leaseCacheSize)
	})
	projects, err := cached(l, l.projects, app, "app\x00"+app.String(), func() ([]string, error) {
		return l.Projects(ctx, app)
	})
	if err != nil {
		return false, err
	}
	for _, p := range projects {
		addrs, err := cached(l, l.leased, p, "project\x00"+p, func() (map[netip.Addr]bool, error) {
			return l.lookup(ctx, p)
		})
		if err != nil {
			return false, err
		}
		if addrs[client] {
			return true, nil
		}
	}
	return false, nil
}

// cached returns c's fresh value for key, or loads it, once for all the
// callers that miss at the same time (sfKey).
func cached[K comparable, V any](l *Leases, c *lru.Cache[K, fresh[V]], key K, sfKey string, load func() (V, error)) (V, error) {
	if e, ok := c.Get(key); ok && time.Now().Before(e.expires) {
		return e.v, nil
	}
	v, err, _ := l.sf.Do(sfKey, func() (any, error) {
		v, err := load()
		if err != nil {
			return nil, err
		}
		c.Add(key, fresh[V]{v: v, expires: time.Now().Add(l.TTL)})
		return v, nil
	})
	if err != nil {
		var zero V
		return zero, err
	}
	return v.(V), nil
}

// lookup lists the addresses leased to instances of project.
func (l *Leases) lookup(ctx context.Context, project string) (map[netip.Addr]bool, error) {
	c := l.Incus(project)
	nets, err := c.GetNetworks(ctx)
	if err != nil {
		return nil, err
	}
	addrs := map[netip.Addr]bool{}
	for _, n := range nets {
		if !n.Managed {
			continue
		}
		leases, err := c.GetNetworkLeases(ctx, n.Name)
		if err != nil {
			return nil, err
		}
		for _, le := range leases {
			// Only leases tied to an instance's interface: Incus filters
			// IPv4 dynamic leases by the project's MACs, but DHCPv6 ones
			// (no hwaddr) and gateway entries of other networks come back
			// unfiltered.
			if le.Hwaddr == "" || le.Type == "uplink" || le.Project != "" && le.Project != project {
				continue
			}
			if a, err := netip.ParseAddr(le.Address); err == nil {
				addrs[a.Unmap()] = true
			}
		}
	}
	return addrs, nil
}
