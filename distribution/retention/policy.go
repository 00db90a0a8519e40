// Package retention decides which builds of an app are kept and prunes
// the rest: the policy (Decide) is a pure function of what the app's
// refs and installations use; Pruner applies it, on demand or
// periodically on one replica at a time.
package retention

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/ref"
)

// Policy says what is kept beyond what is in use.
type Policy struct {
	// KeepBuilds is how many of the newest builds of each branch stay.
	KeepBuilds int
	// KeepAge keeps every build younger than it.
	KeepAge time.Duration
	// KeepOperations is how many of each installation's newest operations
	// keep their targets and origins.
	KeepOperations int
}

// The server's defaults (uplink serve --keep-builds, --keep-age,
// --keep-operations).
const (
	DefaultKeepBuilds     = 50
	DefaultKeepAge        = 30 * 24 * time.Hour
	DefaultKeepOperations = 10
)

// Default is the policy of an app that set none.
var Default = Policy{KeepBuilds: DefaultKeepBuilds, KeepAge: DefaultKeepAge, KeepOperations: DefaultKeepOperations}

// Over is p with the fields r sets replaced.
func (p Policy) Over(r distribution.RetentionSettings) Policy {
	if r.KeepBuilds != nil {
		p.KeepBuilds = *r.KeepBuilds
	}
	if r.KeepAge != nil {
		p.KeepAge = *r.KeepAge
	}
	if r.KeepOperations != nil {
		p.KeepOperations = *r.KeepOperations
	}
	return p
}

// Facts is what the policy decides on.
type Facts struct {
	// Builds are the app's builds, newest first.
	Builds []ref.Build
	// Branches lists each branch's commits, newest first (its history).
	Branches map[string][]string
	// Used names, by commit, what keeps a build whatever the policy: the
	// refs that name it, the installations pinned to it or running it, the
	// operations of it among their last KeepOperations, a publish of it.
	Used map[string][]string
	Now  time.Time
}

// Decision is the fate of one build.
type Decision struct {
	Build ref.Build
	Keep  bool
	// Why names the rule that keeps it, or why none does.
	Why string
}

// Decide returns a decision per build, in the order of f.Builds.
func Decide(p Policy, f Facts) []Decision {
	recent := recentOfBranches(p.KeepBuilds, f)
	out := make([]Decision, 0, len(f.Builds))
	for _, b := range f.Builds {
		d := Decision{Build: b, Keep: true}
		switch {
		case len(f.Used[b.Commit]) > 0:
			d.Why = "used by " + strings.Join(f.Used[b.Commit], ", ")
		case recent[b.Commit] != "":
			d.Why = recent[b.Commit]
		case f.Now.Sub(b.PublishedAt) < p.KeepAge:
			d.Why = fmt.Sprintf("younger than %s", p.KeepAge)
		default:
			d.Keep = false
			d.Why = fmt.Sprintf("older than %s, not among the last %d builds of its branches, used by nothing", p.KeepAge, p.KeepBuilds)
		}
		out = append(out, d)
	}
	return out
}

// recentOfBranches names, by commit, the branch among whose last n builds
// it is. A branch's builds are those its history moved to and those
// published to it (a build's first branch, even once the branch is gone),
// newest published first; builds of no branch count as one more group.
func recentOfBranches(n int, f Facts) map[string]string {
	groups := map[string]map[string]bool{}
	add := func(branch, commit string) {
		if groups[branch] == nil {
			groups[branch] = map[string]bool{}
		}
		groups[branch][commit] = true
	}
	inSome := map[string]bool{}
	for branch, commits := range f.Branches {
		for _, c := range commits {
			add(branch, c)
			inSome[c] = true
		}
	}
	for _, b := range f.Builds {
		if b.Branch != "" || !inSome[b.Commit] {
			add(b.Branch, b.Commit)
		}
	}
	names := slices.Sorted(maps.Keys(groups))
	out := map[string]string{}
	for _, branch := range names {
		members, kept := groups[branch], 0
		for _, b := range f.Builds { // newest first
			if kept >= n {
				break
			}
			if members[b.Commit] {
				kept++
				if out[b.Commit] == "" {
					out[b.Commit] = fmt.Sprintf("among the last %d builds of %s", n, groupName(branch))
				}
			}
		}
	}
	return out
}

func groupName(branch string) string {
	if branch == "" {
		return "no branch"
	}
	return "branch " + branch
}
