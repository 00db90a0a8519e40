package ref

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/storage"
)

// InUseError refuses to delete what something still uses; Users names
// each user ("branch main", "tag v1", "installation web (pinned)").
type InUseError struct {
	What  string
	Users []string
}

func (e *InUseError) Error() string {
	return e.What + " is in use by " + strings.Join(e.Users, ", ")
}

// DeletingError refuses to publish (or tag) a commit while it is being
// deleted.
type DeletingError struct {
	App    artifact.App
	Commit string
}

func (e *DeletingError) Error() string {
	return fmt.Sprintf("commit %s of %s is being deleted: publish it again once the delete is done", e.Commit, e.App)
}

// deletingStale is how old a deletion marker is when its delete must have
// crashed: it no longer holds publishes back.
const deletingStale = 15 * time.Minute

// A delete marks its commit before it looks for users, and a publish
// writes its intent before it looks for a mark: whichever comes second
// sees the other, so a publish and a delete of one commit never both go
// ahead.
func deletingKey(app artifact.App, commit string) string {
	return appKey("deleting", app) + commit
}

type deletingMark struct {
	At time.Time `json:"at"`
}

// deleting reports whether a delete of commit is under way.
func (s *Store) deleting(ctx context.Context, app artifact.App, commit string) (bool, error) {
	var m deletingMark
	_, err := s.getJSON(ctx, deletingKey(app, commit), &m)
	if storage.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return s.now().Sub(m.At) < deletingStale, nil
}

// DeleteBranch removes a branch: its pointer and its history, not its
// builds.
func (s *Store) DeleteBranch(ctx context.Context, app artifact.App, name string) error {
	if err := ValidName("branch", name); err != nil {
		return err
	}
	return s.deletePointer(ctx, branchKey(app, name), "branch "+name+" of "+app.String())
}

// DeleteTag removes a tag.
func (s *Store) DeleteTag(ctx context.Context, app artifact.App, name string) error {
	if err := ValidName("tag", name); err != nil {
		return err
	}
	return s.deletePointer(ctx, tagKey(app, name), "tag "+name+" of "+app.String())
}

func (s *Store) deletePointer(ctx context.Context, key, what string) error {
	if _, err := s.d.Stat(ctx, key); err != nil {
		if storage.IsNotFound(err) {
			return &NotFoundError{What: what}
		}
		return err
	}
	return s.d.Delete(ctx, key)
}

// SetTag points tag name at a build, by its full or abbreviated SHA,
// creating (created) or moving it; the same commit again changes nothing.
func (s *Store) SetTag(ctx context.Context, app artifact.App, name, sha string) (t Tag, created bool, err error) {
	if err := ValidName("tag", name); err != nil {
		return Tag{}, false, err
	}
	commit, err := s.Commit(ctx, app, sha)
	if err != nil {
		return Tag{}, false, err
	}
	if busy, err := s.deleting(ctx, app, commit); err != nil || busy {
		return Tag{}, false, errors.Join(err, deletingErr(busy, app, commit))
	}
	err = storage.UpdateJSON(ctx, s.d, tagKey(app, name), func(cur *Tag, exists bool) (bool, error) {
		created = !exists
		if exists && cur.Commit == commit {
			t = *cur
			return false, nil
		}
		cur.Commit, cur.UpdatedAt, cur.Publish = commit, moveTime(s.now(), cur.UpdatedAt), ""
		t = *cur
		return true, nil
	})
	return t, created, err
}

func deletingErr(busy bool, app artifact.App, commit string) error {
	if !busy {
		return nil
	}
	return &DeletingError{App: app, Commit: commit}
}

// RefUsers names the refs and publishes that keep commit: the branches
// whose head it is, the tags that name it, an unfinished publish of it.
func (s *Store) RefUsers(ctx context.Context, app artifact.App, commit string) ([]string, error) {
	refs, err := s.Refs(ctx, app)
	if err != nil {
		return nil, err
	}
	users := refs.Users()[commit]
	publishing, err := s.Publishing(ctx, app, commit)
	if err != nil {
		return nil, err
	}
	if publishing {
		users = append(users, "a publish of it under way")
	}
	return users, nil
}

// Users maps each commit to the refs that name it ("branch main",
// "tag v1"), sorted.
func (r Refs) Users() map[string][]string {
	out := map[string][]string{}
	for name, p := range r.Branches {
		out[p.Commit] = append(out[p.Commit], "branch "+name)
	}
	for name, p := range r.Tags {
		out[p.Commit] = append(out[p.Commit], "tag "+name)
	}
	for _, users := range out {
		slices.Sort(users)
	}
	return out
}

// Deleted is a build DeleteBuild removed, with the bytes of its
// artifacts.
type Deleted struct {
	Build Build
	Bytes int64
}

// DeleteBuild removes a build: its artifacts (every key under its
// prefix), its record, its journal entry and its moves in every branch's
// history. It refuses (*InUseError) a commit a ref or an unfinished
// publish names, or that check refuses: the caller's own users (the
// installations), asked once no publish of the commit can start.
func (s *Store) DeleteBuild(ctx context.Context, app artifact.App, sha string, check func(ctx context.Context, commit string) error) (Deleted, error) {
	commit, err := s.Commit(ctx, app, sha)
	if err != nil {
		return Deleted{}, err
	}
	b, err := s.Build(ctx, app, commit)
	if err != nil {
		return Deleted{}, err
	}
	mark := deletingKey(app, commit)
	if err := s.putJSON(ctx, mark, deletingMark{At: s.now().UTC()}, storage.Condition{}); err != nil {
		return Deleted{}, err
	}
	defer s.d.Delete(context.WithoutCancel(ctx), mark)
	users, err := s.RefUsers(ctx, app, commit)
	if err != nil {
		return Deleted{}, err
	}
	if len(users) > 0 {
		return Deleted{}, &InUseError{What: "build " + commit + " of " + app.String(), Users: users}
	}
	if check != nil {
		if err := check(ctx, commit); err != nil {
			return Deleted{}, err
		}
	}
	// Once started, a delete is not cut short by its caller going away.
	// The record goes last, so that a delete that failed half-way is
	// still found, and completed, by its retry.
	ctx = context.WithoutCancel(ctx)
	if err := s.d.Delete(ctx, journalKey(app, b)); err != nil {
		return Deleted{}, err
	}
	if err := s.dropMoves(ctx, app, commit); err != nil {
		return Deleted{}, err
	}
	n, err := s.deleteArtifacts(ctx, app, commit)
	if err == nil {
		err = s.d.Delete(ctx, buildKey(app, commit))
	}
	return Deleted{Build: b, Bytes: n}, err
}

// dropMoves removes commit's entries from every branch's history, so a
// branch never falls back to it.
func (s *Store) dropMoves(ctx context.Context, app artifact.App, commit string) error {
	refs, err := s.Refs(ctx, app)
	if err != nil {
		return err
	}
	for name := range refs.Branches {
		err := storage.UpdateJSON(ctx, s.d, branchKey(app, name), func(cur *Branch, exists bool) (bool, error) {
			n := len(cur.History)
			cur.History = slices.DeleteFunc(cur.History, func(m Move) bool { return m.Commit == commit })
			return exists && len(cur.History) != n, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// ArtifactBytes is the size of a commit's artifacts.
func (s *Store) ArtifactBytes(ctx context.Context, app artifact.App, commit string) (int64, error) {
	infos, err := s.d.List(ctx, artifact.CommitPrefix(app, commit))
	var n int64
	for _, info := range infos {
		n += info.Size
	}
	return n, err
}

func (s *Store) deleteArtifacts(ctx context.Context, app artifact.App, commit string) (int64, error) {
	infos, err := s.d.List(ctx, artifact.CommitPrefix(app, commit))
	if err != nil {
		return 0, err
	}
	var n int64
	for _, info := range infos {
		if err := s.d.Delete(ctx, info.Key); err != nil {
			return n, err
		}
		n += info.Size
	}
	return n, nil
}
