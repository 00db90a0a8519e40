package distribution

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
)

// Repositories is the Protocol on storage: it resolves refs, names the
// storage keys, applies the client-index and branch fallbacks, and bounds
// every storage wait by the storage timeout.
type Repositories struct {
	Storage  storage.Getter
	Refs     ref.Resolver
	KeyStore *Keys
	// Clients, when set, remembers which commit's index each client got
	// through a branch, and packages asked for through the branch come
	// from that commit first.
	Clients *ClientIndexes
	// Timeout bounds each storage wait of a response: to the first byte,
	// then per read (DefaultStorageTimeout when zero).
	Timeout time.Duration
}

var _ Protocol = (*Repositories)(nil)

func (s *Repositories) timeout() time.Duration {
	if s.Timeout <= 0 {
		return DefaultStorageTimeout
	}
	return s.Timeout
}

// Admit admits everyone: the allow-list is Access's.
func (s *Repositories) Admit(netip.Addr) error { return nil }

// Resolve resolves the request's ref among the app's published builds.
func (s *Repositories) Resolve(ctx context.Context, req Request) (ref.Resolution, error) {
	return s.Refs.Resolve(ctx, req.Application(), req.Ref)
}

// Index reads an index into memory. Storage has the timeout to answer,
// and as long again for each read after that.
func (s *Repositories) Index(ctx context.Context, req Request, res ref.Resolution) (*Index, error) {
	key := artifact.Key(req.Application(), res.Commit, req.Arch, req.File)
	g := newGuard(ctx, s.timeout())
	defer g.stop()
	obj, err := g.open(s.Storage, key)
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	info := obj.Info()
	if info.Size > MaxIndexSize {
		return nil, ErrIndexTooLarge
	}
	data := make([]byte, info.Size)
	for n := 0; n < len(data); {
		m, err := g.read(obj, data[n:])
		n += m
		if err == io.EOF && n < len(data) {
			err = io.ErrUnexpectedEOF
		}
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("reading %s: %w", key, err)
		}
	}
	return NewIndex(res.Commit, data), nil
}

// Package opens a file from the client's commit (see clientCommit), else
// from the current commit, else from the newest earlier commit of the
// branch that has it.
//
// Storage gets the timeout to the first byte (every Open of the fallback
// chain and the first read together), then the same timeout per read.
func (s *Repositories) Package(ctx context.Context, req Request, res ref.Resolution) (*Package, error) {
	first := s.clientCommit(ctx, req, res) // before the storage deadline starts
	g := newGuard(ctx, s.timeout())
	app := req.Application()
	var obj storage.Object
	var err error
	commit := first
	if first != "" {
		obj, err = g.open(s.Storage, artifact.Key(app, first, req.Arch, req.File))
		if err == nil {
			s.Clients.hitServed.Inc()
		} else if storage.IsNotFound(err) {
			s.Clients.hitMissing.Inc()
		}
	}
	if first == "" || storage.IsNotFound(err) {
		commit = res.Commit
		obj, err = g.open(s.Storage, artifact.Key(app, commit, req.Arch, req.File))
	}
	// The branch moved between the client's index and this request: the
	// package is still in an earlier commit of the branch.
	for _, c := range res.Fallback {
		if !storage.IsNotFound(err) {
			break
		}
		if c == first {
			continue
		}
		commit = c
		obj, err = g.open(s.Storage, artifact.Key(app, commit, req.Arch, req.File))
	}
	if err != nil {
		g.stop()
		return nil, err
	}
	info := obj.Info()
	return &Package{Commit: commit, Size: info.Size, ModTime: info.ModTime,
		ETag: strconv.Quote(commit[:12] + "-" + info.ETag), body: &guardedObject{g: g, obj: obj}}, nil
}

// clientCommit is the commit a package asked for through a branch is
// served from first: the one whose index the client last received through
// the branch, when that is not the current commit and is still within the
// branch's fallback window (so a published build of this app's branch).
// An index is always served from the current commit.
func (s *Repositories) clientCommit(ctx context.Context, req Request, res ref.Resolution) string {
	c := s.Clients
	// Without earlier commits, or when the branch moved longer ago than
	// any client remembers, the current commit is every client's.
	if c == nil || res.Kind != ref.KindBranch || len(res.Fallback) == 0 || artifact.IsIndex(req.File) ||
		time.Since(res.Modified) > c.Horizon() {
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
// branch.
func (s *Repositories) Received(ctx context.Context, req Request, res ref.Resolution) {
	if s.Clients == nil || res.Kind != ref.KindBranch {
		return
	}
	s.Clients.Received(ctx, req.Client, req.Application(), req.Ref, res.Commit)
}

// Keys reads app's settings under the storage timeout.
func (s *Repositories) Keys(ctx context.Context, app artifact.App, _ netip.Addr) (AppSettings, bool, error) {
	sctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	settings, found, err := s.KeyStore.Settings(sctx, app)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		err = fmt.Errorf("%w: %w", ErrStorageTimeout, err)
	}
	return settings, found, err
}
