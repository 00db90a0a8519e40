package instance

import (
	"context"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/instance/operation"
)

// Get returns one installation.
func (s *Service) Get(ctx context.Context, name string) (View, error) {
	r, err := s.loadLive(ctx, name)
	if err != nil {
		return View{}, err
	}
	return s.viewOne(ctx, r), nil
}

// List returns every installation, by name. Their instances are observed
// with one call per project.
func (s *Service) List(ctx context.Context) ([]View, error) {
	rs, err := s.records(ctx)
	if err != nil {
		return nil, err
	}
	var live []*Record
	byProject := map[string][]string{}
	for _, r := range rs {
		if !r.deleted() {
			live = append(live, r)
			p := r.Spec.Instances.Project
			byProject[p] = append(byProject[p], r.Name)
		}
	}
	observed := map[string]map[string][]Instance{}
	for p, names := range byProject {
		observed[p] = s.observe(ctx, p, names)
	}
	out := []View{}
	for _, r := range live {
		out = append(out, s.view(ctx, r, observed[r.Spec.Instances.Project][r.Name]))
	}
	return out, nil
}

// History lists an installation's channel changes, newest first.
func (s *Service) History(ctx context.Context, name string) ([]HistoryEntry, error) {
	r, err := s.loadLive(ctx, name)
	if err != nil {
		return nil, err
	}
	if r.History == nil {
		return []HistoryEntry{}, nil
	}
	return r.History, nil
}

func (s *Service) observe(ctx context.Context, project string, names []string) map[string][]Instance {
	if s.cfg.Observer == nil {
		return nil
	}
	return s.cfg.Observer.Observe(ctx, project, names)
}

func (s *Service) viewOne(ctx context.Context, r *Record) View {
	return s.view(ctx, r, s.observe(ctx, r.Spec.Instances.Project, []string{r.Name})[r.Name])
}

func (s *Service) view(ctx context.Context, r *Record, observed []Instance) View {
	if observed == nil {
		observed = []Instance{}
	}
	v := View{Name: r.Name, Spec: r.Spec, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, Observed: observed}
	if cur := s.running(ctx, r); cur != nil {
		v.ResolvedCommit, v.RepositoryURL = cur.Resolved, s.RepositoryURL(r.Spec, r.Spec.Channel)
	}
	if len(r.Operations) > 0 {
		v.LastOperation = public(r.Operations[0])
	}
	if a := r.active(); a != nil && a.To != nil {
		v.Pending = &Attempt{Channel: ChannelOf(*a.To), Commit: a.To.Resolved, Operation: a.ID}
	}
	if r.LastAttempt != nil {
		la := *r.LastAttempt
		v.LastAttempt = &la
	}
	return v
}

// RepositoryURL is the line an instance of r puts in /etc/apk/repositories.
func (s *Service) RepositoryURL(spec Spec, c Channel) string {
	return distribution.RepositoryURL(s.cfg.DistributionURL, c.Ref(), spec.App)
}

// endpoint is where r's channel points now: for a tracked branch, its
// head, which the instances may not run yet.
func (s *Service) endpoint(ctx context.Context, r *Record) *operation.Endpoint {
	if r.Spec.Channel.IsZero() {
		return nil
	}
	return r.Spec.Channel.at(s.resolvedCommit(ctx, r))
}

// running is what r's instances run: nil until a change-channel
// operation succeeded.
func (s *Service) running(ctx context.Context, r *Record) *operation.Endpoint {
	if r.Spec.Channel.IsZero() {
		return nil
	}
	c := r.lastCommit()
	if c == "" {
		c = s.resolvedCommit(ctx, r)
	}
	return r.Spec.Channel.at(c)
}

func (s *Service) resolvedCommit(ctx context.Context, r *Record) string {
	if c := r.Spec.Channel.Commit; c != "" {
		return c
	}
	app, err := artifact.ParseApp(r.Spec.App)
	if err != nil || s.cfg.Resolver == nil {
		return ""
	}
	res, err := s.cfg.Resolver.Resolve(ctx, app, r.Spec.Channel.Branch)
	if err != nil {
		return ""
	}
	return res.Commit
}

// lastCommit is the commit the instances run: the target of the newest
// succeeded change-channel or upgrade, failures in between or not.
func (r *Record) lastCommit() string {
	if r.Commit != "" || r.Spec.Channel.IsZero() {
		return r.Commit
	}
	// A record written before Commit was kept.
	for _, op := range r.Operations {
		if op.State == operation.Succeeded && op.To != nil && op.Kind != operation.KindDelete {
			return op.To.Resolved
		}
	}
	return ""
}
