package instance

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance/operation"
)

// Put creates (created=true) or updates an installation. A new channel
// starts a change-channel operation, recorded with the change.
func (s *Service) Put(ctx context.Context, name string, spec Spec) (View, *operation.Operation, bool, error) {
	commit, err := s.prepare(ctx, name, &spec)
	if err != nil {
		return View{}, nil, false, err
	}
	var created bool
	var op *operation.Operation
	r, err := s.update(ctx, name, func(r *Record, exists bool) error {
		now := time.Now().UTC()
		created, op = !exists || r.deleted(), nil
		if created {
			r.CreatedAt, r.DeletedAt, r.History, r.PendingUpgrades = now, nil, nil, nil
			r.Spec.Channel, r.Commit, r.LastAttempt = Channel{}, "", nil
		}
		// The record keeps the channel the instances run; the one asked
		// for replaces it when the change succeeds (Update). Asking again
		// for the channel a running change moves to is no new change;
		// asking again after it failed retries it.
		next := spec
		next.Channel = r.Spec.Channel
		target := r.Spec.Channel
		a := r.active()
		if a != nil && a.Kind == operation.KindChangeChannel && a.To != nil {
			target = ChannelOf(*a.To)
		}
		switch {
		case target != spec.Channel:
			if a != nil {
				return &BusyError{Running: a.ID}
			}
			var err error
			if op, err = s.changeChannel(ctx, r, spec.Channel.at(commit), now); err != nil {
				return err
			}
		case !created && reflect.DeepEqual(r.Spec, next):
			return nil
		}
		r.Spec, r.UpdatedAt = next, now
		return nil
	})
	if err != nil {
		return View{}, nil, false, err
	}
	s.kick(op)
	return s.viewOne(ctx, r), op, created, nil
}

// prepare checks a spec, fills its defaults and its key, and resolves its
// channel: spec.Channel becomes the one to record, commit what it names.
func (s *Service) prepare(ctx context.Context, name string, spec *Spec) (commit string, err error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	if spec.Instances.Project == "" {
		spec.Instances.Project = s.cfg.DefaultProject
	}
	if err := normalize(spec); err != nil {
		return "", err
	}
	app, _ := artifact.ParseApp(spec.App)
	ok, err := s.cfg.Refs.AppExists(ctx, app)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", invalid("unknown app %q: nothing is published for it", spec.App)
	}
	if err := s.fillKey(ctx, app, spec); err != nil {
		return "", err
	}
	ch, commit, err := s.resolve(ctx, app, spec.Channel)
	if errors.Is(err, ref.ErrNotFound) {
		return "", &UnusableError{Msg: "channel " + spec.Channel.String() + ": " + err.Error() + " (nothing published there)"}
	}
	if err != nil {
		return "", err
	}
	spec.Channel = ch
	return commit, nil
}

// changeChannel queues, in r, the operation that moves its instances to
// to, and the history entry that records it.
func (s *Service) changeChannel(ctx context.Context, r *Record, to *operation.Endpoint, now time.Time) (*operation.Operation, error) {
	if err := s.archive(ctx, r); err != nil {
		return nil, err
	}
	from := s.running(ctx, r)
	op := r.newOp(operation.KindChangeChannel, from, to, now)
	r.History = slices.Insert(r.History, 0, HistoryEntry{From: chanOf(from), To: ChannelOf(*to), Commit: to.Resolved, At: now, Operation: op.ID, Result: op.State})
	// The history keeps the newest entries only, so the record stays small.
	if len(r.History) > s.cfg.KeepHistory {
		r.History = r.History[:s.cfg.KeepHistory]
	}
	return op, nil
}

func chanOf(e *operation.Endpoint) *Channel {
	if e == nil {
		return nil
	}
	c := ChannelOf(*e)
	return &c
}

// resolve turns a requested channel into the stored one and its commit.
func (s *Service) resolve(ctx context.Context, app artifact.App, c Channel) (Channel, string, error) {
	switch {
	case c.Branch != "":
		b, err := s.cfg.Refs.Branch(ctx, app, c.Branch)
		if err != nil {
			return Channel{}, "", err
		}
		return Channel{Branch: c.Branch}, b.Commit, nil
	case c.Tag != "":
		t, err := s.cfg.Refs.Tag(ctx, app, c.Tag)
		if err != nil {
			return Channel{}, "", err
		}
		// A tag pins to the commit it names now.
		return Channel{Commit: t.Commit, Tag: c.Tag}, t.Commit, nil
	}
	commit, err := s.cfg.Refs.Commit(ctx, app, c.Commit)
	if err != nil {
		return Channel{}, "", err
	}
	return Channel{Commit: commit}, commit, nil
}

// SetChannel pins the installation to a commit (or the commit a tag names)
// or makes it track a branch again.
func (s *Service) SetChannel(ctx context.Context, name string, c Channel) (*operation.Operation, error) {
	if err := ValidChannel(c); err != nil {
		return nil, err
	}
	r, err := s.loadExisting(ctx, name)
	if err != nil {
		return nil, err
	}
	app, _ := artifact.ParseApp(r.Spec.App)
	to, commit, err := s.resolve(ctx, app, c)
	if err != nil {
		return nil, err
	}
	var op *operation.Operation
	_, err = s.update(ctx, name, func(r *Record, exists bool) error {
		if !exists || r.deleted() {
			return notFound(name)
		}
		if a := r.active(); a != nil {
			return &BusyError{Running: a.ID}
		}
		// The channel moves only when the operation succeeds (Update).
		now := time.Now().UTC()
		var err error
		op, err = s.changeChannel(ctx, r, to.at(commit), now)
		r.UpdatedAt = now
		return err
	})
	if err != nil {
		return nil, err
	}
	s.kick(op)
	return public(op), nil
}

// Delete starts the operation that removes the installation's instances;
// when it succeeds the installation is gone (its operations stay readable).
func (s *Service) Delete(ctx context.Context, name string) (*operation.Operation, error) {
	var op *operation.Operation
	_, err := s.update(ctx, name, func(r *Record, exists bool) error {
		if !exists || r.deleted() {
			return notFound(name)
		}
		if a := r.active(); a != nil {
			if a.Kind == operation.KindDelete {
				op = a
				return errAlready
			}
			return &BusyError{Running: a.ID}
		}
		if err := s.archive(ctx, r); err != nil {
			return err
		}
		op = r.newOp(operation.KindDelete, s.endpoint(ctx, r), nil, time.Now().UTC())
		return nil
	})
	if errors.Is(err, errAlready) {
		return public(op), nil
	}
	if err != nil {
		return nil, err
	}
	s.kick(op)
	return public(op), nil
}

var errAlready = errors.New("already deleting")
