package incus

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/uplinkhq/uplink/instance"
)

// Reconciler converges instances to their installations' channels, on
// start and then periodically: operations are how changes normally
// happen, this catches what a crash, a failed cleanup or a hand-made
// change (an "apk add hello=<other>" in an instance) left behind.
type Reconciler struct {
	Client        *ProtocolIncus
	Installations *instance.Service
	Interval      time.Duration
	Logger        *slog.Logger
	// Reads bounds how many instances' apk databases are read at once
	// (default 4), ReadTimeout each read (default 10s): observing runs
	// every interval and on every view of an installation.
	Reads       int
	ReadTimeout time.Duration

	once  sync.Once
	slots chan struct{}
}

// Run reconciles until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	if r.Interval <= 0 {
		r.Interval = time.Minute
	}
	for {
		if err := r.Once(ctx); err != nil && ctx.Err() == nil {
			r.Logger.Warn("reconcile failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.Interval):
		}
	}
}

// Once reconciles every installation, and removes uplink's instances
// that belong to no installation.
func (r *Reconciler) Once(ctx context.Context) error {
	live, err := r.Installations.Names(ctx)
	if err != nil {
		return err
	}
	projects := map[string]bool{"default": true}
	for name, project := range live {
		projects[project] = true
		observed, err := r.observe(ctx, name, project)
		if err != nil {
			r.Logger.Warn("reconcile: cannot list instances", "installation", name, "err", err)
			continue
		}
		op, err := r.Installations.Reconcile(ctx, name, observed)
		if err != nil {
			r.Logger.Warn("reconcile: cannot start an operation", "installation", name, "err", err)
		} else if op != nil {
			r.Logger.Info("reconcile: converging", "installation", name, "operation", op.ID, "kind", op.Kind)
		}
	}
	for project := range projects {
		c := r.Client.UseProject(project)
		all, err := c.GetInstancesWithFilter(ctx, InstanceTypeContainer, []string{"config." + LabelManaged + "=" + managedBy})
		if err != nil {
			return err
		}
		for _, in := range all {
			owner := in.Config[LabelInstallation]
			if _, ok := live[owner]; ok || owner == "" {
				continue
			}
			r.Logger.Info("reconcile: removing an instance of no installation", "instance", in.Name, "installation", owner, "project", project)
			if err := remove(ctx, c, in.Name); err != nil {
				r.Logger.Warn("reconcile: cannot remove orphan", "instance", in.Name, "err", err)
			}
		}
	}
	return nil
}

// observe lists an installation's instances with the version of the
// package each has installed, read from its apk database: the labels say
// what uplink installed and checked, the database what runs now. Where
// the database cannot be read, the label's version stands.
func (r *Reconciler) observe(ctx context.Context, name, project string) ([]instance.Instance, error) {
	c := r.Client.UseProject(project)
	list, err := Instances(ctx, c, name)
	if err != nil {
		return nil, err
	}
	r.once.Do(func() {
		if r.Reads <= 0 {
			r.Reads = 4
		}
		if r.ReadTimeout <= 0 {
			r.ReadTimeout = 10 * time.Second
		}
		r.slots = make(chan struct{}, r.Reads)
	})
	out := make([]instance.Instance, len(list))
	var wg sync.WaitGroup
	for i, in := range list {
		out[i] = instance.Instance{Name: in.Name, Commit: in.Config[LabelCommit], State: in.Status,
			Version: in.Config[LabelVersion], Arch: apkArch(in.Architecture)}
		pkg := in.Config[LabelPackage]
		if in.Status != "Running" || pkg == "" {
			continue
		}
		wg.Go(func() {
			select {
			case r.slots <- struct{}{}:
				defer func() { <-r.slots }()
			case <-ctx.Done():
				return
			}
			rctx, cancel := context.WithTimeout(ctx, r.ReadTimeout)
			defer cancel()
			v, err := installedVersion(rctx, c, in.Name, pkg)
			if err != nil {
				r.Logger.Warn("cannot read the installed version; keeping the label's", "instance", in.Name, "err", err)
				return
			}
			out[i].Version = v
		})
	}
	wg.Wait()
	return out, nil
}

// Observe is installation.Config.Observe: the instances as Incus reports
// them, empty when Incus cannot be asked.
func (r *Reconciler) Observe(ctx context.Context, name, project string) []instance.Instance {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := r.observe(ctx, name, project)
	if err != nil {
		r.Logger.Warn("cannot list instances", "installation", name, "err", err)
		return []instance.Instance{}
	}
	return out
}
