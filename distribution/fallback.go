package distribution

import (
	"context"
	"slices"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
)

// Fallbacks is the decorator of a Protocol that chooses which commit of a
// branch answers a package: the client's (see clientCommit), else the
// current one, else the newest earlier commit of the branch that has it.
// It asks the inner Protocol for one commit at a time, so that what is
// under it (the local artifact cache) sees requests for a single commit
// and answers a hit without asking storage which commit has the file.
type Fallbacks struct {
	Protocol
	// Clients, when set, remembers which commit's index each client got
	// through a branch, and packages asked for through the branch come
	// from that commit first.
	Clients *ClientIndexes
}

var _ Protocol = (*Fallbacks)(nil)

// Package asks the inner Protocol for the file of each candidate commit
// in turn, moving on only when that commit does not have it. Each try has
// the storage timeout of its own: the chain is bounded by the branch's
// fallback window (the builds it retains), not by one deadline.
func (f *Fallbacks) Package(ctx context.Context, req Request, res ref.Resolution) (*Package, error) {
	if res.Kind != ref.KindBranch || len(res.Fallback) == 0 || artifact.IsIndex(req.File) {
		return f.Protocol.Package(ctx, req, res)
	}
	first := f.clientCommit(ctx, req, res)
	if first != "" {
		pkg, err := f.at(ctx, req, res, first)
		if !storage.IsNotFound(err) {
			if err == nil {
				f.Clients.hitServed.Inc()
			}
			return pkg, err
		}
		f.Clients.hitMissing.Inc()
	}
	pkg, err := f.at(ctx, req, res, res.Commit)
	// The branch moved between the client's index and this request: the
	// package is still in an earlier commit of the branch.
	for _, c := range res.Fallback {
		if !storage.IsNotFound(err) {
			break
		}
		if c != first {
			pkg, err = f.at(ctx, req, res, c)
		}
	}
	return pkg, err
}

// at asks the inner Protocol for the file of commit alone.
func (f *Fallbacks) at(ctx context.Context, req Request, res ref.Resolution, commit string) (*Package, error) {
	res.Commit, res.Fallback = commit, nil
	return f.Protocol.Package(ctx, req, res)
}

// clientCommit is the commit a package asked for through a branch is
// served from first: the one whose index the client last received through
// the branch, when that is not the current commit and is still within the
// branch's fallback window (so a published build of this app's branch).
func (f *Fallbacks) clientCommit(ctx context.Context, req Request, res ref.Resolution) string {
	c := f.Clients
	// When the branch moved longer ago than any client remembers, the
	// current commit is every client's.
	if c == nil || time.Since(res.Modified) > c.Horizon() {
		return ""
	}
	commit := c.Commit(ctx, req.Client, req.Application(), req.Ref)
	if commit == "" || commit == res.Commit {
		return ""
	}
	if !slices.Contains(res.Fallback, commit) {
		c.hitOutOfRange.Inc()
		return ""
	}
	return commit
}

// Received remembers the commit of an index a client got through a
// branch, and tells the inner Protocol.
func (f *Fallbacks) Received(ctx context.Context, req Request, res ref.Resolution) {
	if f.Clients != nil && res.Kind == ref.KindBranch {
		f.Clients.Received(ctx, req.Client, req.Application(), req.Ref, res.Commit)
	}
	f.Protocol.Received(ctx, req, res)
}
