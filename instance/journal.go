package instance

import (
	"context"
	"slices"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/storage"
)

// Operation returns one operation, from its installation's record or its
// archive.
func (s *Service) Operation(ctx context.Context, id string) (*operation.Operation, error) {
	seq, name := opSeq(id)
	if name == "" {
		return nil, opNotFound(id)
	}
	r, err := s.loadOr(ctx, name, opNotFound(id))
	if err != nil {
		return nil, err
	}
	for _, op := range r.Operations {
		if op.ID == id {
			return public(op), nil
		}
	}
	op, err := s.readArchived(ctx, archiveKey(name, seq))
	if storage.IsNotFound(err) {
		return nil, opNotFound(id)
	}
	return op, err
}

// Operations lists an installation's operations, newest first.
func (s *Service) Operations(ctx context.Context, name string) ([]*operation.Operation, error) {
	if ValidName(name) != nil {
		return nil, notFound(name)
	}
	// A deleted installation's operations stay readable.
	r, err := s.loadOr(ctx, name, notFound(name))
	if err != nil {
		return nil, err
	}
	out := make([]*operation.Operation, 0, len(r.Operations))
	for _, op := range r.Operations {
		out = append(out, public(op))
	}
	infos, err := s.d.List(ctx, archivePrefix(name))
	if err != nil {
		return nil, err
	}
	for i := len(infos) - 1; i >= 0; i-- {
		op, err := s.readArchived(ctx, infos[i].Key)
		// An archive written again after a crash is also in the record.
		if err == nil && !slices.ContainsFunc(out, func(o *operation.Operation) bool { return o.ID == op.ID }) {
			out = append(out, op)
		}
	}
	return out, nil
}

// Update implements operation.Journal. When an operation ends, its
// installation takes the outcome (Record.end), and its index entry goes.
// Everything it decides on is in the record, so a replica that took the
// operation over decides the same.
func (s *Service) Update(ctx context.Context, id string, fn func(op *operation.Operation) error) (*operation.Operation, error) {
	_, name := opSeq(id)
	if name == "" {
		return nil, opNotFound(id)
	}
	var out, next *operation.Operation
	var started, ended bool
	_, err := s.update(ctx, name, func(r *Record, exists bool) error {
		out, next, started, ended = nil, nil, false, false
		i := slices.IndexFunc(r.Operations, func(o *operation.Operation) bool { return o.ID == id })
		if !exists || i < 0 {
			return opNotFound(id)
		}
		op := r.Operations[i]
		was := op.State
		if err := fn(op); err != nil {
			return err
		}
		out = public(op)
		started = was == operation.Queued && op.State == operation.Running
		if ended = !was.Done() && op.State.Done(); ended {
			next = r.end(op, time.Now().UTC())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if out.State.Done() {
		s.unfinished.unmark(ctx, id)
	}
	s.kick(next)
	s.tell(ctx, out, started, ended)
	return out, nil
}

// tell hands what Update just recorded to the operation events.
func (s *Service) tell(ctx context.Context, op *operation.Operation, started, ended bool) {
	if s.cfg.Events == nil {
		return
	}
	if started {
		s.cfg.Events.OperationStarted(ctx, op)
	}
	if ended {
		s.cfg.Events.OperationFinished(ctx, op)
	}
}

// end records in r the outcome of op, which just ended: its history entry
// takes its result; a change that succeeded moves the channel (and clears
// last_attempt), one that failed leaves it and becomes last_attempt; a
// delete removes the installation; and a publish held back meanwhile to
// the branch the instances now track is queued as an upgrade (returned).
func (r *Record) end(op *operation.Operation, now time.Time) *operation.Operation {
	for j := range r.History {
		if r.History[j].Operation == op.ID {
			r.History[j].Result = op.State
		}
	}
	switch {
	case op.Kind == operation.KindDelete:
		if op.State == operation.Succeeded {
			r.DeletedAt = &now
		}
	case op.To == nil:
	case op.State == operation.Succeeded:
		// An upgrade that succeeds supersedes a failed one on its channel,
		// not a failed change to another channel.
		if op.Kind == operation.KindChangeChannel || r.LastAttempt != nil && r.LastAttempt.Channel == ChannelOf(*op.To) {
			r.LastAttempt = nil
		}
		r.Spec.Channel, r.Commit, r.UpdatedAt = ChannelOf(*op.To), op.To.Resolved, now
	default:
		r.LastAttempt = &Attempt{Channel: ChannelOf(*op.To), Commit: op.To.Resolved, Operation: op.ID, Error: op.Error}
		r.UpdatedAt = now
	}
	held := ""
	if b := r.Spec.Channel.Branch; b != "" && !r.deleted() {
		held = r.PendingUpgrades[b]
	}
	r.PendingUpgrades = nil
	if held != "" && held != r.Commit {
		return r.upgradeOp(held, now)
	}
	return nil
}

// Target implements operation.Journal.
func (s *Service) Target(ctx context.Context, op *operation.Operation) (operation.Target, error) {
	r, _, err := s.load(ctx, op.Installation)
	if err != nil {
		return operation.Target{}, err
	}
	sp := r.Spec
	t := operation.Target{
		Installation: r.Name, App: sp.App, Package: sp.Package, Image: sp.Instances.Image, Profiles: sp.Instances.Profiles,
		Project: sp.Instances.Project, Count: sp.Instances.Count, PublicKey: sp.PublicKey, KeyName: sp.KeyName,
		HealthCommand: sp.HealthCommand,
	}
	if op.To != nil {
		to := ChannelOf(*op.To)
		t.Ref, t.Commit = to.Ref(), op.To.Resolved
		t.RepositoryURL = s.RepositoryURL(sp, to)
		if app, err := artifact.ParseApp(sp.App); err == nil && t.Commit != "" {
			if b, err := s.cfg.Refs.Build(ctx, app, t.Commit); err == nil {
				t.Archs = b.Archs
				// What cannot be read is left out: the verify step reports
				// it before any instance is touched.
				t.Versions, _ = packageVersions(ctx, s.d, app, t.Commit, t.Archs, sp.Package)
			}
		}
	}
	return t, nil
}
