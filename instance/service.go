package instance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/storage"
)

// KeepOperations is how many finished operations stay in an
// installation's record; older ones move to their own objects.
const KeepOperations = 20

// Config wires a Service.
type Config struct {
	Storage storage.Driver
	Refs    *ref.Store
	// Resolver answers what a tracked branch points at now (cached).
	Resolver ref.Resolver
	// DistributionURL is how instances reach the distribution listener,
	// e.g. http://uplink:4080.
	DistributionURL string
	// Kick is called after an operation is created; may be nil.
	Kick func()
	// DefaultProject is the instance project of installations that name
	// none ("default" when empty).
	DefaultProject string
	// Observe reports an installation's instances; may be nil.
	Observe func(ctx context.Context, name, project string) []Instance
	// Keys finds the key an installation names by key_name alone; may be
	// nil (public_key is then required).
	Keys KeyLookup
}

// Service manages installations and keeps their operations; it is the
// operation.Journal of the engine.
type Service struct {
	cfg Config
	d   storage.Driver
}

// New returns a Service.
func New(cfg Config) *Service { return &Service{cfg: cfg, d: cfg.Storage} }

// SetObserver sets Config.Observe (the instance backend is built after
// the service it reports to).
func (s *Service) SetObserver(fn func(ctx context.Context, name, project string) []Instance) {
	s.cfg.Observe = fn
}

const prefix = "meta/installations/"

func recordKey(name string) string { return prefix + name }

func archiveKey(name string, seq int64) string {
	return fmt.Sprintf("meta/operations/%s/%012d", name, seq)
}

func (s *Service) load(ctx context.Context, name string) (*Record, string, error) {
	var r Record
	etag, err := storage.ReadJSON(ctx, s.d, recordKey(name), &r)
	if err != nil {
		return nil, "", err
	}
	return &r, etag, nil
}

// update applies fn to the record by compare-and-swap, retrying when
// another writer got there first. exists is false for a new record.
func (s *Service) update(ctx context.Context, name string, fn func(r *Record, exists bool) error) (*Record, error) {
	var out *Record
	err := storage.UpdateJSON(ctx, s.d, recordKey(name), func(r *Record, exists bool) (bool, error) {
		if !exists {
			*r = Record{Name: name}
		}
		if err := fn(r, exists); err != nil {
			return false, err
		}
		out = r
		return true, nil
	})
	return out, err
}

func (r *Record) active() *operation.Operation {
	for _, op := range r.Operations {
		if !op.State.Done() {
			return op
		}
	}
	return nil
}

func (r *Record) deleted() bool { return r.DeletedAt != nil }

// newOp records a queued operation in r.
func (r *Record) newOp(kind operation.Kind, from, to *operation.Endpoint, now time.Time) *operation.Operation {
	r.Seq++
	op := &operation.Operation{
		ID: r.Name + "." + strconv.FormatInt(r.Seq, 10), Kind: kind, Installation: r.Name, State: operation.Queued,
		From: from, To: to, Steps: []operation.Step{}, Log: []operation.LogLine{}, CreatedAt: now,
	}
	if to != nil {
		op.Commit = to.Resolved
	}
	r.Operations = slices.Insert(r.Operations, 0, op)
	return op
}

// archive moves finished operations beyond KeepOperations to their own
// objects. They are written before they leave the record, so a crash in
// between leaves a copy in both places, never in neither.
func (s *Service) archive(ctx context.Context, r *Record) error {
	for len(r.Operations) > KeepOperations {
		op := r.Operations[len(r.Operations)-1]
		if !op.State.Done() {
			return nil
		}
		seq, _ := opSeq(op.ID)
		b, err := json.Marshal(op)
		if err != nil {
			return err
		}
		if _, err := s.d.Put(ctx, archiveKey(r.Name, seq), bytes.NewReader(b), int64(len(b)), storage.Condition{}); err != nil {
			return err
		}
		r.Operations = r.Operations[:len(r.Operations)-1]
	}
	return nil
}

// resolve turns a requested channel into the stored one and its commit.
func (s *Service) resolve(ctx context.Context, app artifact.App, c operation.Channel) (operation.Endpoint, error) {
	switch {
	case c.Branch != "":
		b, err := s.cfg.Refs.Branch(ctx, app, c.Branch)
		if err != nil {
			return operation.Endpoint{}, err
		}
		return operation.Endpoint{Channel: operation.Channel{Branch: c.Branch}, Resolved: b.Commit}, nil
	case c.Tag != "":
		t, err := s.cfg.Refs.Tag(ctx, app, c.Tag)
		if err != nil {
			return operation.Endpoint{}, err
		}
		// A tag pins to the commit it names now.
		return operation.Endpoint{Channel: operation.Channel{Commit: t.Commit, Tag: c.Tag}, Resolved: t.Commit}, nil
	}
	commit, err := s.cfg.Refs.Commit(ctx, app, c.Commit)
	if err != nil {
		return operation.Endpoint{}, err
	}
	return operation.Endpoint{Channel: operation.Channel{Commit: commit}, Resolved: commit}, nil
}

// endpoint is where r's channel points now: for a tracked branch, its
// head, which the instances may not run yet.
func (s *Service) endpoint(ctx context.Context, r *Record) *operation.Endpoint {
	if r.Spec.Channel.IsZero() {
		return nil
	}
	return &operation.Endpoint{Channel: r.Spec.Channel, Resolved: s.resolvedCommit(ctx, r)}
}

// running is what r's instances run: nil until a change-channel
// operation succeeded.
func (s *Service) running(ctx context.Context, r *Record) *operation.Endpoint {
	if r.Spec.Channel.IsZero() {
		return nil
	}
	c := s.lastCommit(r)
	if c == "" {
		c = s.resolvedCommit(ctx, r)
	}
	return &operation.Endpoint{Channel: r.Spec.Channel, Resolved: c}
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

// RepositoryURL is the line an instance of r puts in /etc/apk/repositories.
func (s *Service) RepositoryURL(spec Spec, c operation.Channel) string {
	return strings.TrimRight(s.cfg.DistributionURL, "/") + "/distribution/" + url.PathEscape(c.Ref()) + "/" + spec.App
}

func (s *Service) view(ctx context.Context, r *Record) View {
	v := View{Name: r.Name, Spec: r.Spec, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, Observed: []Instance{}}
	if cur := s.running(ctx, r); cur != nil {
		v.ResolvedCommit, v.RepositoryURL = cur.Resolved, s.RepositoryURL(r.Spec, cur.Channel)
	}
	if len(r.Operations) > 0 {
		v.LastOperation = public(r.Operations[0])
	}
	if a := r.active(); a != nil && a.To != nil {
		v.Pending = &Attempt{Channel: a.To.Channel, Commit: a.To.Resolved, Operation: a.ID}
	}
	if r.LastAttempt != nil {
		la := *r.LastAttempt
		v.LastAttempt = &la
	}
	if s.cfg.Observe != nil {
		v.Observed = s.cfg.Observe(ctx, r.Name, r.Spec.Instances.Project)
	}
	return v
}

// public returns a copy, so callers never share the record being updated.
func public(op *operation.Operation) *operation.Operation { c := *op; return &c }

// Put creates (created=true) or updates an installation. A new channel
// starts a change-channel operation, recorded with the change.
func (s *Service) Put(ctx context.Context, name string, spec Spec) (View, *operation.Operation, bool, error) {
	if err := ValidName(name); err != nil {
		return View{}, nil, false, err
	}
	if spec.Instances.Project == "" {
		spec.Instances.Project = s.cfg.DefaultProject
	}
	if err := normalize(&spec); err != nil {
		return View{}, nil, false, err
	}
	app, _ := artifact.ParseApp(spec.App)
	ok, err := s.cfg.Refs.AppExists(ctx, app)
	if err != nil {
		return View{}, nil, false, err
	}
	if !ok {
		return View{}, nil, false, invalid("unknown app %q: nothing is published for it", spec.App)
	}
	if err := s.fillKey(ctx, app, &spec); err != nil {
		return View{}, nil, false, err
	}
	to, err := s.resolve(ctx, app, spec.Channel)
	if errors.Is(err, ref.ErrNotFound) {
		return View{}, nil, false, &UnusableError{Msg: "channel " + spec.Channel.String() + ": " + err.Error() + " (nothing published there)"}
	}
	if err != nil {
		return View{}, nil, false, err
	}
	spec.Channel = to.Channel

	var created bool
	var op *operation.Operation
	r, err := s.update(ctx, name, func(r *Record, exists bool) error {
		now := time.Now().UTC()
		created, op = !exists || r.deleted(), nil
		if created {
			r.CreatedAt, r.DeletedAt, r.History, r.PendingUpgrades = now, nil, nil, nil
			r.Spec.Channel, r.Commit, r.LastAttempt = operation.Channel{}, "", nil
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
			target = a.To.Channel
		}
		switch {
		case target != spec.Channel:
			if a != nil {
				return &BusyError{Running: a.ID}
			}
			if err := s.archive(ctx, r); err != nil {
				return err
			}
			from := s.running(ctx, r)
			op = r.newOp(operation.KindChangeChannel, from, &to, now)
			r.History = slices.Insert(r.History, 0, HistoryEntry{From: chanOf(from), To: to.Channel, Commit: to.Resolved, At: now, Operation: op.ID, Result: op.State})
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
	return s.view(ctx, r), op, created, nil
}

func chanOf(e *operation.Endpoint) *operation.Channel {
	if e == nil {
		return nil
	}
	c := e.Channel
	return &c
}

func (s *Service) kick(op *operation.Operation) {
	if op != nil && s.cfg.Kick != nil {
		s.cfg.Kick()
	}
}

// SetChannel pins the installation to a commit (or the commit a tag names)
// or makes it track a branch again.
func (s *Service) SetChannel(ctx context.Context, name string, c operation.Channel) (*operation.Operation, error) {
	if err := ValidChannel(c); err != nil {
		return nil, err
	}
	r, _, err := s.load(ctx, name)
	if storage.IsNotFound(err) || err == nil && r.deleted() {
		return nil, notFound(name)
	}
	if err != nil {
		return nil, err
	}
	app, _ := artifact.ParseApp(r.Spec.App)
	to, err := s.resolve(ctx, app, c)
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
		if err := s.archive(ctx, r); err != nil {
			return err
		}
		now := time.Now().UTC()
		// The channel moves only when the operation succeeds (Update).
		from := s.running(ctx, r)
		op = r.newOp(operation.KindChangeChannel, from, &to, now)
		r.History = slices.Insert(r.History, 0, HistoryEntry{From: chanOf(from), To: to.Channel, Commit: to.Resolved, At: now, Operation: op.ID, Result: op.State})
		r.UpdatedAt = now
		return nil
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

// Get returns one installation.
func (s *Service) Get(ctx context.Context, name string) (View, error) {
	if ValidName(name) != nil {
		return View{}, notFound(name)
	}
	r, _, err := s.load(ctx, name)
	if storage.IsNotFound(err) || err == nil && r.deleted() {
		return View{}, notFound(name)
	}
	if err != nil {
		return View{}, err
	}
	return s.view(ctx, r), nil
}

func (s *Service) records(ctx context.Context) ([]*Record, error) {
	infos, err := s.d.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, info := range infos {
		name := strings.TrimPrefix(info.Key, prefix)
		if ValidName(name) != nil {
			continue
		}
		r, _, err := s.load(ctx, name)
		if storage.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// List returns every installation, by name.
func (s *Service) List(ctx context.Context) ([]View, error) {
	rs, err := s.records(ctx)
	if err != nil {
		return nil, err
	}
	out := []View{}
	for _, r := range rs {
		if !r.deleted() {
			out = append(out, s.view(ctx, r))
		}
	}
	return out, nil
}

// History lists an installation's channel changes, newest first.
func (s *Service) History(ctx context.Context, name string) ([]HistoryEntry, error) {
	r, _, err := s.load(ctx, name)
	if storage.IsNotFound(err) || err == nil && r.deleted() || ValidName(name) != nil {
		return nil, notFound(name)
	}
	if err != nil {
		return nil, err
	}
	if r.History == nil {
		return []HistoryEntry{}, nil
	}
	return r.History, nil
}

func opSeq(id string) (int64, string) {
	i := strings.LastIndexByte(id, '.')
	if i < 0 {
		return 0, ""
	}
	seq, err := strconv.ParseInt(id[i+1:], 10, 64)
	if err != nil || seq < 1 || ValidName(id[:i]) != nil {
		return 0, ""
	}
	return seq, id[:i]
}

// Operation returns one operation, from its installation's record or its
// archive.
func (s *Service) Operation(ctx context.Context, id string) (*operation.Operation, error) {
	seq, name := opSeq(id)
	if name == "" {
		return nil, opNotFound(id)
	}
	r, _, err := s.load(ctx, name)
	if storage.IsNotFound(err) {
		return nil, opNotFound(id)
	}
	if err != nil {
		return nil, err
	}
	for _, op := range r.Operations {
		if op.ID == id {
			return public(op), nil
		}
	}
	obj, err := s.d.Open(ctx, archiveKey(name, seq))
	if storage.IsNotFound(err) {
		return nil, opNotFound(id)
	}
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	var op operation.Operation
	if err := json.NewDecoder(obj).Decode(&op); err != nil {
		return nil, err
	}
	return &op, nil
}

// Operations lists an installation's operations, newest first.
func (s *Service) Operations(ctx context.Context, name string) ([]*operation.Operation, error) {
	if ValidName(name) != nil {
		return nil, notFound(name)
	}
	r, _, err := s.load(ctx, name)
	if storage.IsNotFound(err) {
		return nil, notFound(name)
	}
	if err != nil {
		return nil, err
	}
	out := make([]*operation.Operation, 0, len(r.Operations))
	for _, op := range r.Operations {
		out = append(out, public(op))
	}
	infos, err := s.d.List(ctx, "meta/operations/"+name+"/")
	if err != nil {
		return nil, err
	}
	for i := len(infos) - 1; i >= 0; i-- {
		obj, err := s.d.Open(ctx, infos[i].Key)
		if err != nil {
			continue
		}
		var op operation.Operation
		if json.NewDecoder(obj).Decode(&op) == nil && !slices.ContainsFunc(out, func(o *operation.Operation) bool { return o.ID == op.ID }) {
			out = append(out, &op)
		}
		obj.Close()
	}
	return out, nil
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
			op = s.upgradeOp(ctx, r, commit, time.Now().UTC())
			return nil
		})
		errs = append(errs, err)
		s.kick(op)
	}
	return errors.Join(errs...)
}

// upgradeOp records an upgrade of r's instances, on the branch they
// track, to commit; it supersedes any publish held meanwhile.
func (s *Service) upgradeOp(ctx context.Context, r *Record, commit string, now time.Time) *operation.Operation {
	from := &operation.Endpoint{Channel: r.Spec.Channel, Resolved: s.lastCommit(r)}
	to := &operation.Endpoint{Channel: r.Spec.Channel, Resolved: commit}
	r.PendingUpgrades = nil
	return r.newOp(operation.KindUpgrade, from, to, now)
}

// lastCommit is the commit the instances run: the target of the newest
// succeeded change-channel or upgrade, failures in between or not.
func (s *Service) lastCommit(r *Record) string {
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

// Update implements operation.Journal. When an operation ends, its
// history entry takes its result; a change that succeeded moves the
// channel (and clears last_attempt), one that failed leaves it and
// becomes last_attempt; a delete removes the installation; and a publish
// held back meanwhile to the branch the instances now track is queued as
// an upgrade. Everything it decides on is in the record, so a replica
// that took the operation over decides the same.
func (s *Service) Update(ctx context.Context, id string, fn func(op *operation.Operation) error) (*operation.Operation, error) {
	_, name := opSeq(id)
	if name == "" {
		return nil, opNotFound(id)
	}
	var out *operation.Operation
	var next *operation.Operation
	_, err := s.update(ctx, name, func(r *Record, exists bool) error {
		out, next = nil, nil
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
		if was.Done() || !op.State.Done() {
			return nil
		}
		now := time.Now().UTC()
		for j := range r.History {
			if r.History[j].Operation == id {
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
			if op.Kind == operation.KindChangeChannel || r.LastAttempt != nil && r.LastAttempt.Channel == op.To.Channel {
				r.LastAttempt = nil
			}
			r.Spec.Channel, r.Commit, r.UpdatedAt = op.To.Channel, op.To.Resolved, now
		default:
			r.LastAttempt = &Attempt{Channel: op.To.Channel, Commit: op.To.Resolved, Operation: op.ID, Error: op.Error}
			r.UpdatedAt = now
		}
		held := ""
		if b := r.Spec.Channel.Branch; b != "" && !r.deleted() {
			held = r.PendingUpgrades[b]
		}
		r.PendingUpgrades = nil
		if held != "" && held != r.Commit {
			next = s.upgradeOp(ctx, r, held, now)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.kick(next)
	return out, nil
}

// Unfinished implements operation.Journal.
func (s *Service) Unfinished(ctx context.Context) ([]string, error) {
	rs, err := s.records(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range rs {
		// Oldest first: an installation's operations run in order.
		for i := len(r.Operations) - 1; i >= 0; i-- {
			if !r.Operations[i].State.Done() {
				ids = append(ids, r.Operations[i].ID)
			}
		}
	}
	return ids, nil
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
		t.Ref, t.Commit = op.To.Ref(), op.To.Resolved
		t.RepositoryURL = s.RepositoryURL(sp, op.To.Channel)
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
			versionsOf, versions = want, nil
			if app, err := artifact.ParseApp(r.Spec.App); err == nil {
				if b, err := s.cfg.Refs.Build(ctx, app, want); err == nil {
					// An index that cannot be read now leaves versions
					// unknown, and the instances are judged by commit only.
					versions, _ = packageVersions(ctx, s.d, app, want, b.Archs, r.Spec.Package)
				}
			}
		}
		target := operation.Target{Versions: versions}
		running, labelled, current := 0, 0, 0
		var drifted []string
		for _, in := range observed {
			if in.State != "Running" {
				continue
			}
			running++
			if in.Commit != want {
				continue
			}
			labelled++
			if v, ok := target.Version(in.Arch); ok && in.Version != v {
				got := r.Spec.Package + " " + in.Version
				if in.Version == "" {
					got = "no " + r.Spec.Package
				}
				drifted = append(drifted, fmt.Sprintf("%s has %s installed, not %s", in.Name, got, v))
				continue
			}
			current++
		}
		n := r.Spec.Instances.Count
		if len(observed) == n && current == n {
			return errNoChange
		}
		if err := s.archive(ctx, r); err != nil {
			return err
		}
		now := time.Now().UTC()
		reason := fmt.Sprintf("reconcile: %d instances observed (%d running, %d on %s), want %d", len(observed), running, labelled, want, n)
		if len(drifted) > 0 {
			reason += "; " + strings.Join(drifted, "; ")
		}
		if len(observed) == n && running == n && (r.Spec.Channel.Branch != "" || labelled == n) {
			op = s.upgradeOp(ctx, r, want, now)
		} else {
			cur := s.endpoint(ctx, r)
			op = r.newOp(operation.KindChangeChannel, cur, cur, now)
		}
		op.AddLog(now, reason)
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

// Names lists the live installations with their instance projects.
func (s *Service) Names(ctx context.Context) (map[string]string, error) {
	rs, err := s.records(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, r := range rs {
		if !r.deleted() {
			out[r.Name] = r.Spec.Instances.Project
		}
	}
	return out, nil
}

// Projects lists the instance projects of app's installations.
func (s *Service) Projects(ctx context.Context, app artifact.App) ([]string, error) {
	rs, err := s.records(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rs {
		if !r.deleted() && r.Spec.App == app.String() && !slices.Contains(out, r.Spec.Instances.Project) {
			out = append(out, r.Spec.Instances.Project)
		}
	}
	return out, nil
}
