package instance

import (
	"context"
	"log/slog"
	"time"

	"github.com/uplinkhq/uplink/installation"
)

// Reconciler converges instances to their installations' channels, on
// start and then periodically: operations are how changes normally
// happen, this catches what a crash, a failed cleanup or a hand-made
// change left behind.
type Reconciler struct {
	Client        *ProtocolIncus
	Installations *installation.Service
	Interval      time.Duration
	Logger        *slog.Logger
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

func (r *Reconciler) observe(ctx context.Context, name, project string) ([]installation.Instance, error) {
	list, err := Instances(ctx, r.Client.UseProject(project), name)
	if err != nil {
		return nil, err
	}
	out := make([]installation.Instance, 0, len(list))
	for _, in := range list {
		out = append(out, installation.Instance{Name: in.Name, Commit: in.Config[LabelCommit], State: in.Status})
	}
	return out, nil
}

// Observe is installation.Config.Observe: the instances as Incus reports
// them, empty when Incus cannot be asked.
func (r *Reconciler) Observe(ctx context.Context, name, project string) []installation.Instance {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := r.observe(ctx, name, project)
	if err != nil {
		r.Logger.Warn("cannot list instances", "installation", name, "err", err)
		return []installation.Instance{}
	}
	return out
}
