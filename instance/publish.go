package instance

import (
	"context"
	"errors"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/instance/operation"
)

// OnPublish starts an upgrade of every installation that tracks branch
// of app. One busy with another operation holds the commit until that
// ends (Update), and gets it if it then tracks branch.
func (s *Service) OnPublish(ctx context.Context, app artifact.App, branch, commit string) error {
	rs, err := s.records(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, rec := range rs {
		if !rec.follows(app.String(), branch) {
			continue
		}
		var op *operation.Operation
		_, err := s.update(ctx, rec.Name, func(r *Record, exists bool) error {
			op = nil
			if !exists || !r.follows(app.String(), branch) {
				return nil
			}
			if r.active() != nil {
				if r.PendingUpgrades == nil {
					r.PendingUpgrades = map[string]string{}
				}
				r.PendingUpgrades[branch] = commit
				return nil
			}
			if err := s.archive(ctx, r); err != nil {
				return err
			}
			op = r.upgradeOp(commit, time.Now().UTC())
			return nil
		})
		errs = append(errs, err)
		s.kick(op)
	}
	return errors.Join(errs...)
}

// follows reports whether a publish to branch concerns r: its instances
// track branch, or a running change moves them to it. A branch that was
// only the target of a failed change is not followed.
func (r *Record) follows(app, branch string) bool {
	if r.deleted() || r.Spec.App != app {
		return false
	}
	if r.Spec.Channel.Branch == branch {
		return true
	}
	a := r.active()
	return a != nil && a.Kind == operation.KindChangeChannel && a.To != nil && a.To.Branch == branch
}

// upgradeOp records an upgrade of r's instances, on the branch they
// track, to commit; it supersedes any publish held meanwhile.
func (r *Record) upgradeOp(commit string, now time.Time) *operation.Operation {
	r.PendingUpgrades = nil
	return r.newOp(operation.KindUpgrade, r.Spec.Channel.at(r.lastCommit()), r.Spec.Channel.at(commit), now)
}
