package distribution

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
)

// Publisher is the write side of the repositories, what the admin API's
// build routes call: Protocol's sibling.
type Publisher interface {
	// Upload stores one artifact file. Bytes under a published commit
	// never change: the same bytes again are a no-op, anything else an
	// *ImmutableError.
	Upload(ctx context.Context, f ArtifactFile, body io.Reader) (Uploaded, error)
	// Publish checks a build (see Validator) and moves its refs.
	Publish(ctx context.Context, app artifact.App, req ref.PublishRequest) (ref.Build, error)
}

// ArtifactFile names a file of a build, as uploaded.
type ArtifactFile struct {
	App                artifact.App
	Commit, Arch, File string
}

// Uploaded is a stored artifact file.
type Uploaded struct {
	Key    string
	Size   int64
	SHA256 []byte
	// Created is false when the file was there before (the same bytes, or
	// replaced in a commit not yet published).
	Created bool
}

// ImmutableError refuses to change a file of a published commit.
type ImmutableError struct {
	App    artifact.App
	Commit string
}

func (e *ImmutableError) Error() string {
	return fmt.Sprintf("commit %s of %s is published: its artifacts never change", e.Commit, e.App)
}

// BodyError is an upload whose body could not be read; it wraps the
// reader's error (e.g. the caller's size limit).
type BodyError struct{ Err error }

func (e *BodyError) Error() string { return "reading the request body: " + e.Err.Error() }
func (e *BodyError) Unwrap() error { return e.Err }

// Invalidator drops an app's cached ref pointers after they moved.
type Invalidator interface {
	Invalidate(ctx context.Context, app artifact.App)
}

// Builds is the Publisher on storage and the ref store.
type Builds struct {
	Storage storage.Driver
	Refs    *ref.Store
	// Validator checks a build before it is published; nil publishes
	// whatever has an index.
	Validator *Validator
	// Spool creates the file an upload's body waits in, so that it can be
	// compared and then stored with a known size without holding it in
	// memory; it is removed once the upload is done.
	Spool func() (*os.File, error)
	// Cache, when set, is told of a publish that failed: it may have moved
	// a pointer before failing.
	Cache  Invalidator
	Logger *slog.Logger
}

var _ Publisher = (*Builds)(nil)

// Upload stores one artifact file.
func (b *Builds) Upload(ctx context.Context, f ArtifactFile, body io.Reader) (Uploaded, error) {
	commit, err := artifact.ParseCommit(f.Commit)
	if err != nil {
		return Uploaded{}, err
	}
	if err := artifact.ValidName("arch", f.Arch); err != nil {
		return Uploaded{}, err
	}
	if err := artifact.ValidFile(f.File); err != nil {
		return Uploaded{}, err
	}
	tmp, sum, size, err := b.spool(body)
	if err != nil {
		return Uploaded{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	up := Uploaded{Key: artifact.Key(f.App, commit, f.Arch, f.File), Size: size, SHA256: sum}

	// Checked after the (possibly long) upload, so that the window in
	// which a racing publish could be missed is only the write below.
	published, err := b.published(ctx, f.App, commit)
	if err != nil {
		return Uploaded{}, err
	}
	existing, err := b.sha256(ctx, up.Key)
	switch {
	case err == nil && bytes.Equal(existing, sum):
		return up, nil
	case err == nil && published, storage.IsNotFound(err) && published:
		return Uploaded{}, &ImmutableError{App: f.App, Commit: commit}
	case err != nil && !storage.IsNotFound(err):
		return Uploaded{}, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return Uploaded{}, err
	}
	if _, err := b.Storage.Put(ctx, up.Key, tmp, size, storage.Condition{}); err != nil {
		return Uploaded{}, err
	}
	up.Created = existing == nil
	return up, nil
}

// published reports a commit whose files must not change: published, or
// being published (an interrupted publish will be completed with them).
func (b *Builds) published(ctx context.Context, app artifact.App, commit string) (bool, error) {
	_, err := b.Refs.Build(ctx, app, commit)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, ref.ErrNotFound) {
		return false, err
	}
	return b.Refs.Publishing(ctx, app, commit)
}

// spool copies body to a spool file, hashing it on the way.
func (b *Builds) spool(body io.Reader) (*os.File, []byte, int64, error) {
	tmp, err := b.Spool()
	if err != nil {
		return nil, nil, 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), body)
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, nil, 0, &BodyError{Err: err}
	}
	return tmp, h.Sum(nil), n, nil
}

func (b *Builds) sha256(ctx context.Context, key string) ([]byte, error) {
	obj, err := b.Storage.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	h := sha256.New()
	if _, err := io.Copy(h, obj); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// Publish validates the build, then publishes it. It returns only once
// every write is done and the store's AfterPublish ran; a failure leaves
// the publish intent for the retry or a replica's scan.
func (b *Builds) Publish(ctx context.Context, app artifact.App, req ref.PublishRequest) (ref.Build, error) {
	if err := b.validate(ctx, app, req); err != nil {
		return ref.Build{}, err
	}
	build, err := b.Refs.Publish(ctx, app, req)
	if err != nil && b.Cache != nil {
		// A failed publish may have moved a pointer before failing.
		b.Cache.Invalidate(ctx, app)
	}
	return build, err
}

// validate refuses a build that apk could not install from, before
// anything moves. Until a publish succeeds the commit has no build record,
// so its files stay replaceable (see Upload).
func (b *Builds) validate(ctx context.Context, app artifact.App, req ref.PublishRequest) error {
	if b.Validator == nil {
		return nil
	}
	commit, err := artifact.ParseCommit(req.Commit)
	if err != nil {
		return err
	}
	// Cheap checks of the request first, so a typo costs no package reads.
	if req.Branch != "" {
		if err := ref.ValidName("branch", req.Branch); err != nil {
			return err
		}
	}
	for _, t := range req.Tags {
		if err := ref.ValidName("tag", t); err != nil {
			return err
		}
	}
	// A published build is immutable and was checked when it was first
	// published: publishing it again (another branch, a tag, a move back)
	// only moves pointers.
	_, err = b.Refs.Build(ctx, app, commit)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ref.ErrNotFound) {
		return err
	}
	archs, err := b.Refs.Archs(ctx, app, commit)
	if err != nil {
		return err
	}
	if len(archs) == 0 {
		return &ref.MissingIndexError{Prefix: artifact.CommitPrefix(app, commit)}
	}
	err = b.Validator.Validate(ctx, app, commit, archs)
	var ve *ValidationError
	if errors.As(err, &ve) && b.Logger != nil {
		b.Logger.Info("publish refused", "app", app.String(), "commit", commit, "code", ve.Code, "problems", len(ve.Problems)+ve.Omitted)
	}
	return err
}
