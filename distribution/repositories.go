package distribution

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
)

// Repositories is the Protocol on storage: it resolves refs, names the
// storage keys, and bounds every storage wait by the storage timeout. A
// request is answered from the resolved commit alone (Fallbacks chooses
// among a branch's commits).
type Repositories struct {
	Storage  storage.Getter
	Refs     ref.Resolver
	KeyStore *Keys
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

// Package opens the file of res.Commit alone: which commit of a branch
// answers is Fallbacks' choice.
//
// Storage gets the timeout to the first byte (the Open and the first read
// together), then the same timeout per read.
func (s *Repositories) Package(ctx context.Context, req Request, res ref.Resolution) (*Package, error) {
	g := newGuard(ctx, s.timeout())
	obj, err := g.open(s.Storage, artifact.Key(req.Application(), res.Commit, req.Arch, req.File))
	if err != nil {
		g.stop()
		return nil, err
	}
	info := obj.Info()
	return &Package{Commit: res.Commit, Size: info.Size, ModTime: info.ModTime,
		ETag: strconv.Quote(res.Commit[:12] + "-" + info.ETag), body: &guardedObject{g: g, obj: obj}}, nil
}

// Received remembers nothing: Fallbacks does.
func (s *Repositories) Received(context.Context, Request, ref.Resolution) {}

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
