package ref

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/storage"
)

// Kind says how a ref resolved.
type Kind string

// The kinds, in the order of precedence Resolve tries them.
const (
	KindCommit Kind = "commit"
	KindBranch Kind = "branch"
	KindTag    Kind = "tag"
	KindAbbrev Kind = "abbrev"
)

// MinAbbrev is the shortest abbreviated SHA Resolve accepts.
const MinAbbrev = 7

// Resolution is what a ref points at now.
type Resolution struct {
	Kind   Kind   `json:"kind"`
	Commit string `json:"commit"`
	// Modified is when the ref last moved to Commit (for a commit or an
	// abbreviation: when the build was published).
	Modified time.Time `json:"modified"`
	// Fallback lists a branch's earlier commits, newest first, within the
	// retention window: where a package missing from Commit may be found.
	Fallback []string `json:"fallback,omitempty"`
}

// Immutable reports whether the answer can never change (a full SHA).
func (r Resolution) Immutable() bool { return r.Kind == KindCommit }

// Resolver turns a ref into a commit.
type Resolver interface {
	Resolve(ctx context.Context, app artifact.App, ref string) (Resolution, error)
}

// Resolve follows API.md's order: a full commit SHA, a branch, a tag, an
// abbreviated SHA unique among the app's builds. Only published builds
// resolve. A not-found answer is a *NotFoundError; anything else is the
// storage failing.
func (s *Store) Resolve(ctx context.Context, app artifact.App, name string) (Resolution, error) {
	if artifact.IsFullCommit(name) {
		b, err := s.Build(ctx, app, name)
		if err == nil {
			return Resolution{Kind: KindCommit, Commit: b.Commit, Modified: b.PublishedAt}, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return Resolution{}, err
		}
	}
	if ValidName("ref", name) != nil {
		return Resolution{}, &NotFoundError{What: "ref " + name}
	}
	br, err := s.Branch(ctx, app, name)
	if err == nil {
		r := Resolution{Kind: KindBranch, Commit: br.Commit, Modified: br.UpdatedAt}
		seen := map[string]bool{br.Commit: true}
		for _, m := range br.History {
			if len(r.Fallback) >= s.retention()-1 {
				break
			}
			if !seen[m.Commit] {
				seen[m.Commit] = true
				r.Fallback = append(r.Fallback, m.Commit)
			}
		}
		return r, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return Resolution{}, err
	}
	t, err := s.Tag(ctx, app, name)
	if err == nil {
		return Resolution{Kind: KindTag, Commit: t.Commit, Modified: t.UpdatedAt}, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return Resolution{}, err
	}
	if len(name) >= MinAbbrev && len(name) < 64 && artifact.IsHex(name) {
		commit, err := s.expand(ctx, app, strings.ToLower(name))
		if err != nil {
			return Resolution{}, err
		}
		b, err := s.Build(ctx, app, commit)
		if err != nil {
			return Resolution{}, err
		}
		return Resolution{Kind: KindAbbrev, Commit: commit, Modified: b.PublishedAt}, nil
	}
	return Resolution{}, &NotFoundError{What: "ref " + name + " of " + app.String()}
}

// AmbiguousError is an abbreviation that names more than one build.
type AmbiguousError struct {
	Abbrev  string
	Commits []string
}

func (e *AmbiguousError) Error() string {
	return "abbreviated commit " + e.Abbrev + " is ambiguous: " + strings.Join(e.Commits, ", ")
}

// Is makes an ambiguous abbreviation a not-found for the distribution path.
func (e *AmbiguousError) Is(target error) bool { return target == ErrNotFound }

func (s *Store) expand(ctx context.Context, app artifact.App, abbrev string) (string, error) {
	prefix := appKey("builds", app)
	infos, err := s.d.List(ctx, prefix+abbrev)
	if err != nil {
		return "", err
	}
	var commits []string
	for _, info := range infos {
		if c := strings.TrimPrefix(info.Key, prefix); artifact.IsFullCommit(c) {
			commits = append(commits, c)
		}
	}
	switch len(commits) {
	case 0:
		return "", &NotFoundError{What: "commit " + abbrev + " of " + app.String()}
	case 1:
		return commits[0], nil
	}
	return "", &AmbiguousError{Abbrev: abbrev, Commits: commits}
}

// Commit resolves a full or abbreviated commit SHA of a published build,
// never a branch or tag of the same spelling.
func (s *Store) Commit(ctx context.Context, app artifact.App, sha string) (string, error) {
	sha = strings.ToLower(sha)
	switch {
	case artifact.IsFullCommit(sha):
		if _, err := s.Build(ctx, app, sha); err != nil {
			return "", err
		}
		return sha, nil
	case len(sha) >= MinAbbrev && len(sha) < 64 && artifact.IsHex(sha):
		return s.expand(ctx, app, sha)
	}
	return "", fmt.Errorf("%w: commit %q is not a SHA of at least %d hex digits", artifact.ErrInvalid, sha, MinAbbrev)
}

// AppExists reports whether app has published builds.
func (s *Store) AppExists(ctx context.Context, app artifact.App) (bool, error) {
	_, err := s.d.Stat(ctx, appMarkerKey(app))
	if storage.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}
