package ref

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/storage"
)

// A publish takes several writes (build record, journal, app marker,
// branch, tags). To make it atomic across a crash, its intent is written
// first and removed last: whoever finds an intent (a retry of the same
// request, or any replica's scan once the intent is older than a grace
// period) completes it. Every write of a publish is idempotent for the
// same intent, and a pointer remembers which intent moved it, so
// completing an intent twice moves nothing twice.
//
// While an intent is pending, a reader may see the build by its SHA and in
// the build list before the branch and tags move, as during any publish;
// never a pointer to a build that does not exist.

const publishesPrefix = "meta/publishes/"

// intent is the durable record of one publish.
type intent struct {
	ID      string         `json:"id"`
	App     string         `json:"app"`
	Request PublishRequest `json:"request"`
	Archs   []string       `json:"archs"`
	// CreatedAt is also the publish time of a build this intent records.
	CreatedAt time.Time `json:"created_at"`
	// Before is each pointer as it was when the intent was written
	// (branch under "", tags by name): a scan moves a pointer only if
	// nobody moved it since, so completing an interrupted publish never
	// undoes a later one.
	Before map[string]Pointer `json:"before"`
}

func intentPrefix(app artifact.App, commit string) string {
	return publishesPrefix + app.Org + "/" + app.Name + "/" + commit + "-"
}

func (in *intent) key(app artifact.App) string { return intentPrefix(app, in.Request.Commit) + in.ID }

// same reports whether req asks for exactly what in does.
func (in *intent) same(req PublishRequest) bool {
	r := in.Request
	return r.Branch == req.Branch && r.Message == req.Message && r.Author == req.Author && slices.Equal(sortedSet(r.Tags), sortedSet(req.Tags))
}

func sortedSet(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// Published is what the AfterPublish hook is told.
type Published struct {
	App     artifact.App
	Request PublishRequest
	Build   Build
	// Branch is the branch now at the commit because of this publish; ""
	// when there is none, or when a scan found that a later publish had
	// already moved it elsewhere.
	Branch string
	// Recovered: completed by a scan, not by the request that started it.
	Recovered bool
}

// newIntent records req's intent (the pointers it moves as they are now)
// before anything else of the publish is written.
func (s *Store) newIntent(ctx context.Context, app artifact.App, req PublishRequest, archs []string) (*intent, error) {
	raw := make([]byte, 8)
	rand.Read(raw)
	in := &intent{ID: hex.EncodeToString(raw), App: app.String(), Request: req, Archs: archs, CreatedAt: s.now().UTC(),
		Before: map[string]Pointer{}}
	if req.Branch != "" {
		var p Pointer
		if _, err := s.getJSON(ctx, branchKey(app, req.Branch), &p); err != nil && !storage.IsNotFound(err) {
			return nil, err
		}
		in.Before[""] = p
	}
	for _, name := range req.Tags {
		var p Pointer
		if _, err := s.getJSON(ctx, tagKey(app, name), &p); err != nil && !storage.IsNotFound(err) {
			return nil, err
		}
		in.Before[name] = p
	}
	if err := s.putJSON(ctx, in.key(app), in, storage.Condition{IfAbsent: true}); err != nil {
		return nil, err
	}
	// A delete of the commit that marked it first goes ahead; this
	// publish steps back (see deletingKey).
	if busy, err := s.deleting(ctx, app, req.Commit); err != nil || busy {
		_ = s.d.Delete(context.WithoutCancel(ctx), in.key(app))
		return nil, errors.Join(err, deletingErr(busy, app, req.Commit))
	}
	return in, nil
}

// pendingIntent returns the unfinished intent of the same request, if any:
// a retry completes it rather than publishing a second time.
func (s *Store) pendingIntent(ctx context.Context, app artifact.App, req PublishRequest) (*intent, error) {
	infos, err := s.d.List(ctx, intentPrefix(app, req.Commit))
	if err != nil {
		return nil, err
	}
	for _, info := range infos {
		var in intent
		if _, err := s.getJSON(ctx, info.Key, &in); err != nil {
			if storage.IsNotFound(err) {
				continue // completed meanwhile
			}
			return nil, err
		}
		if in.same(req) {
			return &in, nil
		}
	}
	return nil, nil
}

// Publishing reports whether a publish of commit is under way (or was
// interrupted and will be completed): its files must not change any more.
func (s *Store) Publishing(ctx context.Context, app artifact.App, commit string) (bool, error) {
	infos, err := s.d.List(ctx, intentPrefix(app, commit))
	return len(infos) > 0, err
}

// PublishingCommits lists the commits of app with a publish under way.
func (s *Store) PublishingCommits(ctx context.Context, app artifact.App) (map[string]bool, error) {
	prefix := publishesPrefix + app.Org + "/" + app.Name + "/"
	infos, err := s.d.List(ctx, prefix)
	out := map[string]bool{}
	for _, info := range infos {
		if commit, _, ok := strings.Cut(strings.TrimPrefix(info.Key, prefix), "-"); ok {
			out[commit] = true
		}
	}
	return out, err
}

// apply does every write of in. Each is idempotent: the build record is
// created once, the journal and app marker are put if absent, and a
// pointer already moved by in is left alone. Completing an intent written
// earlier (resumed: by a scan or a retry) also leaves a pointer that
// someone moved after the intent was written: that later publish wins, as
// it would have had this one not been interrupted. A fresh publish moves
// its pointers whatever raced it, in compare-and-swap order.
func (s *Store) apply(ctx context.Context, app artifact.App, in *intent, resumed bool) (Build, string, error) {
	req, commit := in.Request, in.Request.Commit
	build := Build{Commit: commit, Branch: req.Branch, Archs: in.Archs, Message: req.Message, Author: req.Author, PublishedAt: in.CreatedAt}
	// A build is recorded once; publishing it again (another branch, new
	// tags) keeps the first record.
	err := storage.UpdateJSON(ctx, s.d, buildKey(app, commit), func(cur *Build, exists bool) (bool, error) {
		if exists {
			build = *cur
			return false, nil
		}
		*cur = build
		return true, nil
	})
	if err != nil {
		return Build{}, "", err
	}
	for _, step := range []struct {
		key string
		v   any
	}{{journalKey(app, build), map[string]string{"commit": commit}}, {appMarkerKey(app), map[string]any{}}} {
		if err := s.putJSON(ctx, step.key, step.v, storage.Condition{IfAbsent: true}); err != nil && !errors.Is(err, storage.ErrConditionFailed) {
			return Build{}, "", err
		}
	}

	moved := ""
	if req.Branch != "" {
		err := storage.UpdateJSON(ctx, s.d, branchKey(app, req.Branch), func(cur *Branch, _ bool) (bool, error) {
			moved = ""
			switch {
			case slices.ContainsFunc(cur.History, func(m Move) bool { return m.Publish == in.ID }):
			case cur.Commit == commit:
			case resumed && !unchanged(in.Before[""], cur.Commit, cur.UpdatedAt):
				return false, nil
			default:
				at := moveTime(s.now(), cur.UpdatedAt)
				cur.History = slices.Insert(cur.History, 0, Move{Commit: commit, Previous: cur.Commit, At: at, Publish: in.ID})
				cur.Commit, cur.UpdatedAt = commit, at
				moved = req.Branch
				return true, nil
			}
			if cur.Commit == commit {
				moved = req.Branch
			}
			return false, nil
		})
		if err != nil {
			return Build{}, "", err
		}
		if !resumed {
			moved = req.Branch // as before intents: the publish's branch
		}
	}
	for _, name := range req.Tags {
		err := storage.UpdateJSON(ctx, s.d, tagKey(app, name), func(cur *Tag, _ bool) (bool, error) {
			if cur.Publish == in.ID || cur.Commit == commit ||
				resumed && !unchanged(in.Before[name], cur.Commit, cur.UpdatedAt) {
				return false, nil
			}
			cur.Commit, cur.UpdatedAt, cur.Publish = commit, moveTime(s.now(), cur.UpdatedAt), in.ID
			return true, nil
		})
		if err != nil {
			return Build{}, "", err
		}
	}
	return build, moved, nil
}

func unchanged(before Pointer, commit string, at time.Time) bool {
	return before.Commit == commit && before.UpdatedAt.Equal(at)
}

// finish runs the hook, then removes the intent: a crash in between runs
// the hook again on completion (an upgrade to the commit the instances
// already got), rather than never.
func (s *Store) finish(ctx context.Context, app artifact.App, in *intent, build Build, branch string, recovered bool) error {
	if s.AfterPublish != nil {
		s.AfterPublish(ctx, Published{App: app, Request: in.Request, Build: s.withTags(ctx, app, []Build{build})[0], Branch: branch, Recovered: recovered})
	}
	return s.d.Delete(ctx, in.key(app))
}

// Recover completes every publish whose intent is older than grace: one
// that crashed, or failed, between its writes. A younger one may still be
// running. It returns how many it completed.
func (s *Store) Recover(ctx context.Context, grace time.Duration) (int, error) {
	infos, err := s.d.List(ctx, publishesPrefix)
	if err != nil {
		return 0, err
	}
	done := 0
	var errs []error
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		ok, err := s.recoverOne(ctx, info.Key, grace)
		if err != nil {
			errs = append(errs, fmt.Errorf("completing publish %s: %w", strings.TrimPrefix(info.Key, publishesPrefix), err))
		}
		if ok {
			done++
		}
	}
	return done, errors.Join(errs...)
}

func (s *Store) recoverOne(ctx context.Context, key string, grace time.Duration) (bool, error) {
	var in intent
	if _, err := s.getJSON(ctx, key, &in); err != nil {
		if storage.IsNotFound(err) {
			return false, nil // completed meanwhile
		}
		return false, err
	}
	if s.now().Sub(in.CreatedAt) < grace {
		return false, nil
	}
	app, err := artifact.ParseApp(in.App)
	if err != nil {
		return false, err
	}
	if in.key(app) != key {
		return false, fmt.Errorf("intent under %s names %s", key, in.key(app))
	}
	build, branch, err := s.apply(ctx, app, &in, true)
	if err != nil {
		return false, err
	}
	return true, s.finish(ctx, app, &in, build, branch, true)
}
