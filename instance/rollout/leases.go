package rollout

import (
	"context"
	"net/netip"
	"sync"
	"time"

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

	mu       sync.Mutex
	cache    map[string]leaseEntry
	projects map[artifact.App]projectsEntry
	sf       singleflight.Group
}

type projectsEntry struct {
	names   []string
	expires time.Time
}

type leaseEntry struct {
	addrs   map[netip.Addr]bool
	expires time.Time
}

// Allowed is distribution's Authorizer: it reports whether client holds a lease in a project of one of
// app's installations; an error means it could not decide.
func (l *Leases) Allowed(ctx context.Context, app artifact.App, client netip.Addr) (bool, error) {
	projects, err := l.appProjects(ctx, app)
	if err != nil {
		return false, err
	}
	for _, p := range projects {
		addrs, err := l.leased(ctx, p)
		if err != nil {
			return false, err
		}
		if addrs[client] {
			return true, nil
		}
	}
	return false, nil
}

func (l *Leases) ttl() time.Duration {
	if l.TTL <= 0 {
		return 10 * time.Second
	}
	return l.TTL
}

func (l *Leases) appProjects(ctx context.Context, app artifact.App) ([]string, error) {
	l.mu.Lock()
	e, ok := l.projects[app]
	l.mu.Unlock()
	if ok && time.Now().Before(e.expires) {
		return e.names, nil
	}
	v, err, _ := l.sf.Do("app\x00"+app.String(), func() (any, error) {
		names, err := l.Projects(ctx, app)
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.projects == nil {
			l.projects = map[artifact.App]projectsEntry{}
		}
		l.projects[app] = projectsEntry{names: names, expires: time.Now().Add(l.ttl())}
		l.mu.Unlock()
		return names, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]string), nil
}

func (l *Leases) leased(ctx context.Context, project string) (map[netip.Addr]bool, error) {
	l.mu.Lock()
	e, ok := l.cache[project]
	l.mu.Unlock()
	if ok && time.Now().Before(e.expires) {
		return e.addrs, nil
	}
	v, err, _ := l.sf.Do("project\x00"+project, func() (any, error) {
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
		l.mu.Lock()
		if l.cache == nil {
			l.cache = map[string]leaseEntry{}
		}
		l.cache[project] = leaseEntry{addrs: addrs, expires: time.Now().Add(l.ttl())}
		l.mu.Unlock()
		return addrs, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(map[netip.Addr]bool), nil
}
