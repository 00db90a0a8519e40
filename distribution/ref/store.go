// Package ref owns the mutable pointers into immutable artifacts: builds
// (published commits), branch heads with their history, and tags. All of
// it lives in storage; caches sit in front of Resolve, never instead of it.
package ref

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/storage"
)

// DefaultRetention is how many commits of a branch's history a package
// request through the branch may fall back to.
const DefaultRetention = 20

// Build is a published commit of an app.
type Build struct {
	Commit      string    `json:"commit"`
	Branch      string    `json:"branch,omitempty"`
	Tags        []string  `json:"tags"`
	Archs       []string  `json:"archs"`
	Message     string    `json:"message,omitempty"`
	Author      string    `json:"author,omitempty"`
	PublishedAt time.Time `json:"published_at"`
}

// Move is one entry of a branch's history.
type Move struct {
	Commit   string    `json:"commit"`
	Previous string    `json:"previous,omitempty"`
	At       time.Time `json:"at"`
	// Publish is the id of the publish intent that made this move.
	Publish string `json:"publish,omitempty"`
}

// Branch is a branch head. History is newest first; History[0] is the
// move that made Commit the head.
type Branch struct {
	Commit    string    `json:"commit"`
	UpdatedAt time.Time `json:"updated_at"`
	History   []Move    `json:"history"`
}

// Tag points at one commit.
type Tag struct {
	Commit    string    `json:"commit"`
	UpdatedAt time.Time `json:"updated_at"`
	// Publish is the id of the publish intent that last moved the tag.
	Publish string `json:"publish,omitempty"`
}

// Pointer is what the refs listing shows of a branch or tag.
type Pointer struct {
	Commit    string    `json:"commit"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Refs lists an app's branches and tags.
type Refs struct {
	Branches map[string]Pointer `json:"branches"`
	Tags     map[string]Pointer `json:"tags"`
}

// PublishRequest is what CI sends to publish a commit.
type PublishRequest struct {
	Commit  string   `json:"commit"`
	Branch  string   `json:"branch"`
	Tags    []string `json:"tags"`
	Message string   `json:"message"`
	Author  string   `json:"author"`
}

// MaxTextLength bounds a build's message and author.
const MaxTextLength = 64 << 10

// MaxTags bounds the tags one publish moves.
const MaxTags = 100

// NotFoundError says which ref or build does not exist.
type NotFoundError struct{ What string }

func (e *NotFoundError) Error() string { return e.What + " not found" }

// Is makes errors.Is(err, ErrNotFound) hold.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// ErrNotFound matches every NotFoundError.
var ErrNotFound = errors.New("not found")

// MissingIndexError refuses a publish whose commit has no index.
type MissingIndexError struct{ Prefix string }

func (e *MissingIndexError) Error() string {
	return fmt.Sprintf("no %s under %s<arch>/: upload the repository before publishing", artifact.IndexFile, e.Prefix)
}

// Store keeps refs in storage.
type Store struct {
	d storage.Driver
	// Retention bounds the branch fallback (DefaultRetention when 0).
	Retention int
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// AfterPublish, when set, is told of every completed publish, by its
	// request or by Recover, before its intent is removed (so at least
	// once): where caches and installations hear of it.
	AfterPublish func(ctx context.Context, p Published)
}

// NewStore returns a Store on d.
func NewStore(d storage.Driver) *Store { return &Store{d: d} }

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Store) retention() int {
	if s.Retention > 0 {
		return s.Retention
	}
	return DefaultRetention
}

func appKey(kind string, app artifact.App) string {
	return "meta/" + kind + "/" + app.Org + "/" + app.Name + "/"
}

func buildKey(app artifact.App, commit string) string { return appKey("builds", app) + commit }

// Names may hold '/', which url.PathEscape turns into %2F: one key
// segment per name, and a reversible mapping for listings.
func branchKey(app artifact.App, name string) string {
	return appKey("branches", app) + url.PathEscape(name)
}

func tagKey(app artifact.App, name string) string { return appKey("tags", app) + url.PathEscape(name) }

// The journal lists builds newest first without reading every record: its
// keys sort by inverted publish time.
func journalKey(app artifact.App, b Build) string {
	return fmt.Sprintf("%s%019d-%s", appKey("journal", app), math.MaxInt64-b.PublishedAt.UnixNano(), b.Commit)
}

func appMarkerKey(app artifact.App) string { return "meta/apps/" + app.Org + "/" + app.Name }

func (s *Store) getJSON(ctx context.Context, key string, v any) (string, error) {
	return storage.ReadJSON(ctx, s.d, key, v)
}

func (s *Store) putJSON(ctx context.Context, key string, v any, cond storage.Condition) error {
	return storage.WriteJSON(ctx, s.d, key, v, cond)
}

// moveTime is when a pointer moves: rounded up to the next whole second,
// since HTTP dates have one-second resolution and apk compares them with
// its own download time, and strictly after the previous move, so that
// Last-Modified only ever grows (a rollback is never answered 304).
func moveTime(now, prev time.Time) time.Time {
	t := now.Truncate(time.Second)
	if t.Before(now) {
		t = t.Add(time.Second)
	}
	if !prev.IsZero() && !t.After(prev) {
		t = prev.Truncate(time.Second).Add(time.Second)
	}
	return t.UTC()
}

// Archs lists the archs of a commit's repository that have an index.
func (s *Store) Archs(ctx context.Context, app artifact.App, commit string) ([]string, error) {
	prefix := artifact.CommitPrefix(app, commit)
	infos, err := s.d.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var archs []string
	for _, info := range infos {
		arch, file, ok := strings.Cut(strings.TrimPrefix(info.Key, prefix), "/")
		if ok && file == artifact.IndexFile {
			archs = append(archs, arch)
		}
	}
	return archs, nil
}

// Publish records a build and moves its branch and tags to it, atomically
// across crashes (see intent.go): a failed or interrupted publish is
// completed by its retry or by Recover. Each pointer moves by
// compare-and-swap, so racing publishers never lose an update; the build
// record is written first, so a pointer never names a build that does not
// exist.
func (s *Store) Publish(ctx context.Context, app artifact.App, req PublishRequest) (Build, error) {
	if err := app.Validate(); err != nil {
		return Build{}, err
	}
	commit, err := artifact.ParseCommit(req.Commit)
	if err != nil {
		return Build{}, err
	}
	req.Commit = commit
	if req.Branch != "" {
		if err := ValidName("branch", req.Branch); err != nil {
			return Build{}, err
		}
	}
	for _, t := range req.Tags {
		if err := ValidName("tag", t); err != nil {
			return Build{}, err
		}
	}
	if len(req.Message) > MaxTextLength || len(req.Author) > MaxTextLength {
		return Build{}, fmt.Errorf("%w: message or author longer than %d bytes", artifact.ErrInvalid, MaxTextLength)
	}
	if len(req.Tags) > MaxTags {
		return Build{}, fmt.Errorf("%w: more than %d tags", artifact.ErrInvalid, MaxTags)
	}
	in, err := s.pendingIntent(ctx, app, req)
	if err != nil {
		return Build{}, err
	}
	resumed := in != nil
	if in == nil {
		archs, err := s.Archs(ctx, app, commit)
		if err != nil {
			return Build{}, err
		}
		if len(archs) == 0 {
			return Build{}, &MissingIndexError{Prefix: artifact.CommitPrefix(app, commit)}
		}
		if in, err = s.newIntent(ctx, app, req, archs); err != nil {
			return Build{}, err
		}
	}
	build, branch, err := s.apply(ctx, app, in, resumed)
	if err != nil {
		return Build{}, err
	}
	// Complete once applied: a failure to remove the intent only leaves
	// Recover an idempotent no-op to do.
	_ = s.finish(ctx, app, in, build, branch, false)
	return s.withTags(ctx, app, []Build{build})[0], nil
}

// Build returns one published build.
func (s *Store) Build(ctx context.Context, app artifact.App, commit string) (Build, error) {
	var b Build
	if _, err := s.getJSON(ctx, buildKey(app, commit), &b); err != nil {
		if storage.IsNotFound(err) {
			return Build{}, &NotFoundError{What: "build " + commit + " of " + app.String()}
		}
		return Build{}, err
	}
	return b, nil
}

// Branch returns a branch head.
func (s *Store) Branch(ctx context.Context, app artifact.App, name string) (Branch, error) {
	var b Branch
	if _, err := s.getJSON(ctx, branchKey(app, name), &b); err != nil {
		if storage.IsNotFound(err) {
			return Branch{}, &NotFoundError{What: "branch " + name + " of " + app.String()}
		}
		return Branch{}, err
	}
	return b, nil
}

// Tag returns a tag.
func (s *Store) Tag(ctx context.Context, app artifact.App, name string) (Tag, error) {
	var t Tag
	if _, err := s.getJSON(ctx, tagKey(app, name), &t); err != nil {
		if storage.IsNotFound(err) {
			return Tag{}, &NotFoundError{What: "tag " + name + " of " + app.String()}
		}
		return Tag{}, err
	}
	return t, nil
}

// Builds lists builds newest first: a branch's history when branch is
// set, else every build of the app. limit <= 0 means all.
func (s *Store) Builds(ctx context.Context, app artifact.App, branch string, limit int) ([]Build, error) {
	var commits []string
	if branch != "" {
		b, err := s.Branch(ctx, app, branch)
		if err != nil {
			return nil, err
		}
		for _, m := range b.History {
			commits = append(commits, m.Commit)
		}
	} else {
		infos, err := s.d.List(ctx, appKey("journal", app))
		if err != nil {
			return nil, err
		}
		for _, info := range infos {
			if _, commit, ok := strings.Cut(info.Key[strings.LastIndexByte(info.Key, '/')+1:], "-"); ok {
				commits = append(commits, commit)
			}
		}
	}
	if limit > 0 && len(commits) > limit {
		commits = commits[:limit]
	}
	builds := make([]Build, 0, len(commits))
	for _, c := range commits {
		b, err := s.Build(ctx, app, c)
		if err != nil {
			return nil, err
		}
		builds = append(builds, b)
	}
	return s.withTags(ctx, app, builds), nil
}

// withTags fills each build's Tags with the tags that name it now.
func (s *Store) withTags(ctx context.Context, app artifact.App, builds []Build) []Build {
	refs, err := s.Refs(ctx, app)
	byCommit := map[string][]string{}
	if err == nil {
		for name, t := range refs.Tags {
			byCommit[t.Commit] = append(byCommit[t.Commit], name)
		}
	}
	for i := range builds {
		tags := byCommit[builds[i].Commit]
		slices.Sort(tags)
		builds[i].Tags = append([]string{}, tags...)
	}
	return builds
}

// Refs lists an app's branches and tags.
func (s *Store) Refs(ctx context.Context, app artifact.App) (Refs, error) {
	refs := Refs{Branches: map[string]Pointer{}, Tags: map[string]Pointer{}}
	for _, kind := range []string{"branches", "tags"} {
		prefix := appKey(kind, app)
		infos, err := s.d.List(ctx, prefix)
		if err != nil {
			return Refs{}, err
		}
		for _, info := range infos {
			name, err := url.PathUnescape(strings.TrimPrefix(info.Key, prefix))
			if err != nil {
				continue
			}
			var p Pointer
			if _, err := s.getJSON(ctx, info.Key, &p); err != nil {
				if storage.IsNotFound(err) {
					continue
				}
				return Refs{}, err
			}
			if kind == "branches" {
				refs.Branches[name] = p
			} else {
				refs.Tags[name] = p
			}
		}
	}
	return refs, nil
}

// Apps lists the apps that have builds.
func (s *Store) Apps(ctx context.Context) ([]artifact.App, error) {
	infos, err := s.d.List(ctx, "meta/apps/")
	if err != nil {
		return nil, err
	}
	apps := make([]artifact.App, 0, len(infos))
	for _, info := range infos {
		if app, err := artifact.ParseApp(strings.TrimPrefix(info.Key, "meta/apps/")); err == nil {
			apps = append(apps, app)
		}
	}
	return apps, nil
}
