package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/uplinkhq/uplink/instance"
)

// Reconciler converges instances to their installations' channels, on
// start and then periodically: operations are how changes normally
// happen, this catches what a crash, a failed cleanup or a hand-made
// change (an "apk add hello=<other>" in an instance) left behind.
type Reconciler struct {
	Observer      *Observer
	Installations *instance.Service
	Interval      time.Duration
	Logger        *slog.Logger
}

// DefaultReconcileInterval is Reconciler.Interval's default (and uplink
// serve's).
const DefaultReconcileInterval = time.Minute

// Run reconciles until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	if r.Interval <= 0 {
		r.Interval = DefaultReconcileInterval
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
// that belong to no installation: one list of instances per project
// serves both.
func (r *Reconciler) Once(ctx context.Context) error {
	live, err := r.Installations.Names(ctx)
	if err != nil {
		return err
	}
	projects := map[string][]string{"default": nil}
	for name, project := range live {
		projects[project] = append(projects[project], name)
	}
	var errs []error
	for project, names := range projects {
		if err := r.project(ctx, project, names, live); err != nil {
			errs = append(errs, fmt.Errorf("project %s: %w", project, err))
		}
	}
	return errors.Join(errs...)
}

// project reconciles the installations of one project and removes its
// orphans; live names every installation, of any project.
func (r *Reconciler) project(ctx context.Context, project string, names []string, live map[string]string) error {
	c := r.Observer.Incus(project)
	list, err := managed(ctx, c)
	if err != nil {
		return err
	}
	observed := r.Observer.group(ctx, c, list, names)
	for _, name := range names {
		op, err := r.Installations.Reconcile(ctx, name, observed[name])
		if err != nil {
			r.Logger.Warn("reconcile: cannot start an operation", "installation", name, "err", err)
		} else if op != nil {
			r.Logger.Info("reconcile: converging", "installation", name, "operation", op.ID, "kind", op.Kind)
		}
	}
	for _, in := range list {
		owner := in.Config[LabelInstallation]
		if _, ok := live[owner]; ok || owner == "" {
			continue
		}
		r.Logger.Info("reconcile: removing an instance of no installation", "instance", in.Name, "installation", owner, "project", project)
		if err := remove(ctx, c, in.Name); err != nil {
			r.Logger.Warn("reconcile: cannot remove orphan", "instance", in.Name, "err", err)
		}
	}
	return nil
}
