package distribution_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
)

type invalidations struct{ n int }

func (i *invalidations) Invalidate(context.Context, artifact.App) { i.n++ }

func newBuilds(t *testing.T) (*distribution.Builds, *invalidations) {
	d := newStore(t)
	dir := t.TempDir()
	inv := &invalidations{}
	return &distribution.Builds{
		Storage: d, Refs: ref.NewStore(d), Cache: inv,
		Validator: &distribution.Validator{Storage: d, Keys: distribution.NewKeys(d)},
		Spool:     func() (*os.File, error) { return os.CreateTemp(dir, "upload-*") },
	}, inv
}

// Bytes under a published commit never change; before the publish they
// can be replaced, and the same bytes again are a no-op.
func TestUpload(t *testing.T) {
	b, _ := newBuilds(t)
	file := distribution.ArtifactFile{App: acme, Commit: commit, Arch: "x86_64", File: "hello-1.0-r0.apk"}
	up := func(body string) (distribution.Uploaded, error) {
		return b.Upload(t.Context(), file, strings.NewReader(body))
	}
	if u, err := up("one"); err != nil || !u.Created || u.Size != 3 || u.Key != artifact.Key(acme, commit, "x86_64", file.File) {
		t.Fatalf("first upload: %+v %v", u, err)
	}
	if u, err := up("two"); err != nil || u.Created {
		t.Fatalf("replacing before the publish: %+v %v", u, err)
	}
	index := file
	index.File = artifact.IndexFile
	if _, err := b.Upload(t.Context(), index, strings.NewReader("index")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Refs.Publish(t.Context(), acme, ref.PublishRequest{Commit: commit}); err != nil {
		t.Fatal(err)
	}
	if u, err := up("two"); err != nil || u.Created {
		t.Fatalf("the same bytes again: %+v %v", u, err)
	}
	var ie *distribution.ImmutableError
	if _, err := up("three"); !errors.As(err, &ie) {
		t.Fatalf("other bytes under a published commit: %v", err)
	}
	other := file
	other.File = "other-1.0-r0.apk"
	if _, err := b.Upload(t.Context(), other, strings.NewReader("x")); !errors.As(err, &ie) {
		t.Fatalf("a new file under a published commit: %v", err)
	}
	bad := file
	bad.Arch = "../x"
	if _, err := b.Upload(t.Context(), bad, strings.NewReader("x")); !errors.Is(err, artifact.ErrInvalid) {
		t.Fatalf("bad arch: %v", err)
	}
	var be *distribution.BodyError
	if _, err := b.Upload(t.Context(), file, &failing{}); !errors.As(err, &be) {
		t.Fatalf("unreadable body: %v", err)
	}
}

type failing struct{}

func (failing) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// A publish is validated before anything moves.
func TestPublishValidates(t *testing.T) {
	b, _ := newBuilds(t)
	var mi *ref.MissingIndexError
	if _, err := b.Publish(t.Context(), acme, ref.PublishRequest{Commit: commit, Branch: "main"}); !errors.As(err, &mi) {
		t.Fatalf("no index: %v", err)
	}
	if _, err := b.Publish(t.Context(), acme, ref.PublishRequest{Commit: commit, Branch: "a..b"}); !errors.Is(err, artifact.ErrInvalid) {
		t.Fatalf("bad branch: %v", err)
	}
	b.Upload(t.Context(), distribution.ArtifactFile{App: acme, Commit: commit, Arch: "x86_64", File: artifact.IndexFile}, strings.NewReader("not an index"))
	var ve *distribution.ValidationError
	if _, err := b.Publish(t.Context(), acme, ref.PublishRequest{Commit: commit, Branch: "main"}); !errors.As(err, &ve) || ve.Code != distribution.CodeInvalidIndex {
		t.Fatalf("unreadable index: %v", err)
	}
	if _, err := b.Refs.Resolve(t.Context(), acme, "main"); !errors.Is(err, ref.ErrNotFound) {
		t.Fatalf("a refused publish moved main: %v", err)
	}
}
