package instance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/instance/operation"
)

// Reconcile compares what an installation's instances run (observed)
// with its channel, and starts the operation that converges them: an
// upgrade in place when the right number of instances run but an older
// commit of the tracked branch, or another version of the package than
// the channel's commit lists (someone ran apk by hand), else a
// re-bootstrap on the same channel. It leaves alone an installation with
// an operation running, or whose last operation failed (retrying it
// forever would not help; an operator decides).
func (s *Service) Reconcile(ctx context.Context, name string, observed []Instance) (*operation.Operation, error) {
	var op *operation.Operation
	// The versions a commit lists never change: read once per call, not
	// again when the compare-and-swap retries.
	var versionsOf string
	var versions map[string]string
	_, err := s.update(ctx, name, func(r *Record, exists bool) error {
		op = nil
		if !exists || r.deleted() || r.active() != nil || len(r.Operations) > 0 && r.Operations[0].State == operation.Failed {
			return errNoChange
		}
		want := s.resolvedCommit(ctx, r)
		if want == "" {
			return errNoChange
		}
		if versionsOf != want {
			versionsOf, versions = want, s.versions(ctx, r, want)
		}
		c := census(observed, want, r.Spec.Package, operation.Target{Versions: versions})
		n := r.Spec.Instances.Count
		if len(observed) == n && c.current == n {
			return errNoChange
		}
		if err := s.archive(ctx, r); err != nil {
			return err
		}
		now := time.Now().UTC()
		if len(observed) == n && c.running == n && (r.Spec.Channel.Branch != "" || c.labelled == n) {
			op = r.upgradeOp(want, now)
		} else {
			cur := s.endpoint(ctx, r)
			op = r.newOp(operation.KindChangeChannel, cur, cur, now)
		}
		op.AddLog(now, c.reason(len(observed), want, n))
		return nil
	})
	if errors.Is(err, errNoChange) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s.kick(op)
	return public(op), nil
}

var errNoChange = errors.New("nothing to change")

// versions reads the version of r's package that each arch of commit
// lists; nil when its build or indexes cannot be read now (the instances
// are then judged by commit only).
func (s *Service) versions(ctx context.Context, r *Record, commit string) map[string]string {
	app, err := artifact.ParseApp(r.Spec.App)
	if err != nil {
		return nil
	}
	b, err := s.cfg.Refs.Build(ctx, app, commit)
	if err != nil {
		return nil
	}
	v, _ := packageVersions(ctx, s.d, app, commit, b.Archs, r.Spec.Package)
	return v
}

// counts sorts observed instances: running, of those labelled with the
// wanted commit, and of those with the package version it lists.
type counts struct {
	running, labelled, current int
	drifted                    []string
}

func census(observed []Instance, want, pkg string, target operation.Target) counts {
	var c counts
	for _, in := range observed {
		if in.State != "Running" {
			continue
		}
		c.running++
		if in.Commit != want {
			continue
		}
		c.labelled++
		if v, ok := target.Version(in.Arch); ok && in.Version != v {
			got := pkg + " " + in.Version
			if in.Version == "" {
				got = "no " + pkg
			}
			c.drifted = append(c.drifted, fmt.Sprintf("%s has %s installed, not %s", in.Name, got, v))
			continue
		}
		c.current++
	}
	return c
}

func (c counts) reason(observed int, want string, n int) string {
	reason := fmt.Sprintf("reconcile: %d instances observed (%d running, %d on %s), want %d", observed, c.running, c.labelled, want, n)
	if len(c.drifted) > 0 {
		reason += "; " + strings.Join(c.drifted, "; ")
	}
	return reason
}
