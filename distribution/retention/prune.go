package retention

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
)

// Usage names what uses an app's commits, branches and tags ("installation
// web (pinned)"), each list sorted.
type Usage struct {
	Commits, Branches, Tags map[string][]string
}

// NewUsage returns an empty Usage.
func NewUsage() Usage {
	return Usage{Commits: map[string][]string{}, Branches: map[string][]string{}, Tags: map[string][]string{}}
}

// Add records that who uses key in m (a no-op for an empty key).
func Add(m map[string][]string, key, who string) {
	if key == "" || slices.Contains(m[key], who) {
		return
	}
	m[key] = append(m[key], who)
	slices.Sort(m[key])
}

// Installations says what an app's installations use: the commits they
// are pinned to, run, or have an unfinished operation to or from, and,
// when keepOps > 0, the targets and origins of their last keepOps
// operations; the branches they track and the tags their channels name.
type Installations interface {
	Usage(ctx context.Context, app artifact.App, keepOps int) (Usage, error)
}

// Invalidator drops an app's cached ref pointers on every replica.
type Invalidator interface {
	Invalidate(ctx context.Context, app artifact.App)
}

// Pruned is a build a prune deleted, or would delete.
type Pruned struct {
	Build  ref.Build
	Bytes  int64
	Reason string
}

// Report is what a prune did (or, dry, would do).
type Report struct {
	DryRun  bool
	Deleted []Pruned
	Kept    int
	Bytes   int64
}

// Pruner deletes builds: one on request (DeleteBuild) or all that an
// app's policy does not keep (Prune), and periodically every app's (Run).
type Pruner struct {
	Refs *ref.Store
	// Installations may be nil: no installation then uses anything.
	Installations Installations
	// Keys holds each app's own policy, over Default; nil: Default only.
	Keys    *distribution.Keys
	Default Policy
	// Cache may be nil.
	Cache Invalidator
	// Storage holds the lease that keeps periodic runs to one replica.
	Storage storage.Driver
	// Interval is how often Run prunes every app; 0 turns Run off.
	Interval time.Duration
	// Holder names this replica in the lease.
	Holder string
	Logger *slog.Logger
	Now    func() time.Time

	builds, bytes prometheus.Counter
	runs          *prometheus.CounterVec
}

// Register creates the pruner's metrics in reg (nil: unregistered).
func (p *Pruner) Register(reg prometheus.Registerer) {
	p.builds = prometheus.NewCounter(prometheus.CounterOpts{Name: "uplink_retention_builds_deleted_total",
		Help: "Builds deleted, by a prune or a DELETE of the build."})
	p.bytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "uplink_retention_bytes_deleted_total",
		Help: "Bytes of artifacts deleted with their builds."})
	p.runs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "uplink_retention_runs_total",
		Help: "Prunes of an app, periodic or requested (not dry runs), by result: ok or error."}, []string{"result"})
	if reg != nil {
		reg.MustRegister(p.builds, p.bytes, p.runs)
	}
}

func (p *Pruner) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Pruner) log() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

// usage is what the installations use (empty without them).
func (p *Pruner) usage(ctx context.Context, app artifact.App, keepOps int) (Usage, error) {
	if p.Installations == nil {
		return NewUsage(), nil
	}
	return p.Installations.Usage(ctx, app, keepOps)
}

// DeleteBuild deletes one build (full or abbreviated SHA), refused with a
// *ref.InUseError while a ref, a publish or an installation uses it.
func (p *Pruner) DeleteBuild(ctx context.Context, app artifact.App, sha string) (ref.Deleted, error) {
	check := func(ctx context.Context, commit string) error {
		u, err := p.usage(ctx, app, 0)
		if err != nil {
			return err
		}
		if users := u.Commits[commit]; len(users) > 0 {
			return &ref.InUseError{What: "build " + commit + " of " + app.String(), Users: users}
		}
		return nil
	}
	d, err := p.Refs.DeleteBuild(ctx, app, sha, check)
	if err == nil || d.Bytes > 0 {
		p.deleted(ctx, app, d)
	}
	return d, err
}

func (p *Pruner) deleted(ctx context.Context, app artifact.App, d ref.Deleted) {
	if p.Cache != nil {
		p.Cache.Invalidate(ctx, app)
	}
	if p.builds != nil {
		p.builds.Inc()
		p.bytes.Add(float64(d.Bytes))
	}
	p.log().Info("build deleted", "app", app.String(), "commit", d.Build.Commit, "bytes", d.Bytes)
}

// Facts gathers what the policy decides on for app.
func (p *Pruner) Facts(ctx context.Context, app artifact.App, pol Policy) (Facts, error) {
	f := Facts{Branches: map[string][]string{}, Now: p.now()}
	builds, err := p.Refs.Builds(ctx, app, "", 0)
	if err != nil {
		return f, err
	}
	f.Builds = builds
	refs, err := p.Refs.Refs(ctx, app)
	if err != nil {
		return f, err
	}
	for name := range refs.Branches {
		br, err := p.Refs.Branch(ctx, app, name)
		if errors.Is(err, ref.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return f, err
		}
		for _, m := range br.History {
			f.Branches[name] = append(f.Branches[name], m.Commit)
		}
	}
	f.Used = refs.Users()
	u, err := p.usage(ctx, app, pol.KeepOperations)
	if err != nil {
		return f, err
	}
	for c, users := range u.Commits {
		for _, who := range users {
			Add(f.Used, c, who)
		}
	}
	publishing, err := p.Refs.PublishingCommits(ctx, app)
	if err != nil {
		return f, err
	}
	for c := range publishing {
		Add(f.Used, c, "a publish of it under way")
	}
	return f, nil
}

// Prune deletes the builds of app that its policy keeps for no reason;
// dry only reports them, exactly as a real run would delete them unless
// something starts using one meanwhile.
func (p *Pruner) Prune(ctx context.Context, app artifact.App, dry bool) (rep Report, err error) {
	rep = Report{DryRun: dry, Deleted: []Pruned{}}
	if !dry {
		defer func() { p.ran(err) }()
	}
	pol, err := p.Policy(ctx, app)
	if err != nil {
		return rep, err
	}
	f, err := p.Facts(ctx, app, pol)
	if err != nil {
		return rep, err
	}
	for _, d := range Decide(pol, f) {
		if d.Keep {
			rep.Kept++
			continue
		}
		pr := Pruned{Build: d.Build, Reason: d.Why}
		if dry {
			pr.Bytes, err = p.Refs.ArtifactBytes(ctx, app, d.Build.Commit)
		} else {
			var del ref.Deleted
			del, err = p.DeleteBuild(ctx, app, d.Build.Commit)
			pr.Bytes = del.Bytes
			if _, inUse := errors.AsType[*ref.InUseError](err); inUse || errors.Is(err, ref.ErrNotFound) {
				rep.Kept++ // used or gone since the facts were read
				continue
			}
		}
		if err != nil {
			return rep, err
		}
		rep.Deleted = append(rep.Deleted, pr)
		rep.Bytes += pr.Bytes
	}
	return rep, nil
}

func (p *Pruner) ran(err error) {
	if p.runs == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	p.runs.WithLabelValues(result).Inc()
}

// Policy is app's policy: its own settings over the server's default.
func (p *Pruner) Policy(ctx context.Context, app artifact.App) (Policy, error) {
	if p.Keys == nil {
		return p.Default, nil
	}
	s, _, err := p.Keys.Settings(ctx, app)
	if err != nil {
		return Policy{}, err
	}
	return p.Default.Over(s.Retention), nil
}
