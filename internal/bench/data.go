package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/filesystem"
	"github.com/uplinkhq/uplink/storage/s3"
)

const arch = "x86_64"

// tb lets the harness call apktest, whose builders report through a
// testing.TB; a failure panics, and the deferred clean-up still runs.
type tb struct{ testing.TB }

func (tb) Helper() {}

func (tb) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

// dataset is one app's repository as CI would build it: a big signed
// index and one big package, plus a small index for the scale builds.
type dataset struct {
	app        artifact.App
	commit     string
	dir        string // <dir>/<arch>/{APKINDEX.tar.gz,<pkg>}
	index      []byte
	pkgFile    string
	pkgSum     [32]byte
	pkgSize    int64
	smallIndex []byte
}

// generate builds the repository: a package of pkgSize random bytes and
// an index listing it among enough entries with random checksums that
// the index is about indexSize bytes.
func generate(dir string, indexSize, pkgSize int) (*dataset, error) {
	key := apktest.NewKey(tb{})
	pkg := apktest.BuildPackage(tb{}, key, apktest.Package{
		Name: "bench", Version: "1.0-r0", Arch: arch, Description: "uplink benchmark payload",
		Files: []apktest.File{{Path: "usr/share/bench/payload", Data: randomBytes(pkgSize)}},
	})
	d := &dataset{
		app:     artifact.App{Org: "acme", Name: "app"},
		commit:  commitOf("acme/app", 0),
		dir:     dir,
		pkgFile: pkg.Filename(),
		pkgSum:  sha256.Sum256(pkg.APK),
		pkgSize: int64(len(pkg.APK)),
	}
	d.index = sizedIndex(key, pkg, indexSize)
	d.smallIndex = apktest.BuildIndex(tb{}, key, []apktest.BuiltPackage{pkg}, "uplink benchmark")
	if err := os.MkdirAll(filepath.Join(dir, arch), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, arch, d.pkgFile), pkg.APK, 0o644); err != nil {
		return nil, err
	}
	return d, os.WriteFile(filepath.Join(dir, arch, artifact.IndexFile), d.index, 0o644)
}

// sizedIndex measures what one filler entry costs compressed, then
// builds the index with as many as make it about size bytes.
func sizedIndex(key apktest.Key, pkg apktest.BuiltPackage, size int) []byte {
	const probe = 2000
	small := apktest.BuildIndex(tb{}, key, fillers(pkg, probe), "")
	perEntry := float64(len(small)) / probe
	return apktest.BuildIndex(tb{}, key, fillers(pkg, int(float64(size)/perEntry)), "uplink benchmark")
}

// fillers returns pkg followed by n-1 made-up packages with random
// checksums, names and sizes, as incompressible as a real index.
func fillers(pkg apktest.BuiltPackage, n int) []apktest.BuiltPackage {
	sizes := make([]byte, 1<<20)
	out := []apktest.BuiltPackage{pkg}
	for i := 1; i < n; i++ {
		var f apktest.BuiltPackage
		rand.Read(f.ControlHash[:])
		f.Name = fmt.Sprintf("lib%s-%d", rand.Text()[:6], i)
		f.Version = fmt.Sprintf("%d.%d.%d-r%d", mrand.IntN(20), mrand.IntN(100), mrand.IntN(100), mrand.IntN(10))
		f.Arch = arch
		f.Description = "filler package " + rand.Text()[:12]
		f.Depends = []string{"so:libc.musl-x86_64.so.1", "so:lib" + rand.Text()[:5] + ".so.1"}
		f.APK = sizes[:mrand.IntN(len(sizes))]
		f.InstalledSize = int64(mrand.IntN(8 << 20))
		out = append(out, f)
	}
	return out
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// commitOf is a stable, distinct full SHA per app and build number.
func commitOf(app string, i int) string {
	sum := sha1.Sum(fmt.Appendf(nil, "%s/%d", app, i))
	return hex.EncodeToString(sum[:])
}

// publishDirect writes an index straight into storage and publishes the
// commit with ref.Store, as CI that uploads to S3 itself does.
func publishDirect(ctx context.Context, d storage.Driver, store *ref.Store, app artifact.App, commit, branch string, index []byte) error {
	key := artifact.Key(app, commit, arch, artifact.IndexFile)
	if _, err := d.Put(ctx, key, bytes.NewReader(index), int64(len(index)), storage.Condition{}); err != nil {
		return err
	}
	_, err := store.Publish(ctx, app, ref.PublishRequest{Commit: commit, Branch: branch})
	return err
}

// populateLarge builds the scale data set, in a filesystem store and a
// bucket of its own: the measured app's repository published on main as
// in the one-app data set, among s.builds builds.
func (b *bench) populateLarge(ctx context.Context) error {
	s := b.plan.scale
	b.logf("adding %s builds across %s apps and %s branches to a filesystem store and a bucket",
		comma(s.builds), comma(s.apps), comma(s.branches))
	start := time.Now()
	dir, stores, closeStores, err := b.openStores(ctx, "uplink-fs-large", s3Large)
	if err != nil {
		return err
	}
	defer closeStores()
	b.fsLargeDir = dir
	g, gctx := errgroup.WithContext(ctx)
	for _, d := range stores {
		g.Go(func() error { return b.fillLarge(gctx, d) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	b.logf("large data set ready in %v", time.Since(start).Round(time.Millisecond))
	return nil
}

// openStores opens a filesystem store in a new directory dirName (under
// its storage/) and the S3 bucket; closeStores closes them.
func (b *bench) openStores(ctx context.Context, dirName, bucket string) (dir string, stores []storage.Driver, closeStores func(), err error) {
	dir = b.mkdir(dirName)
	fs, err := filesystem.New(filepath.Join(dir, "storage"))
	if err != nil {
		return "", nil, nil, err
	}
	s3d, err := s3.New(ctx, b.s3Config(bucket))
	if err != nil {
		fs.Close()
		return "", nil, nil, err
	}
	return dir, []storage.Driver{fs, s3d}, func() { fs.Close() }, nil
}

func (b *bench) fillLarge(ctx context.Context, d storage.Driver) error {
	if err := b.publishData(ctx, d); err != nil {
		return err
	}
	return populate(ctx, d, b.data, b.plan.scale)
}

// publishData stores the one-app data set's package and index in d and
// publishes its commit on main.
func (b *bench) publishData(ctx context.Context, d storage.Driver) error {
	pkg, err := os.ReadFile(filepath.Join(b.data.dir, arch, b.data.pkgFile))
	if err != nil {
		return err
	}
	key := artifact.Key(b.data.app, b.data.commit, arch, b.data.pkgFile)
	if _, err := d.Put(ctx, key, bytes.NewReader(pkg), int64(len(pkg)), storage.Condition{}); err != nil {
		return err
	}
	return publishDirect(ctx, d, ref.NewStore(d), b.data.app, b.data.commit, "main", b.data.index)
}

// scale is the size of the large data set.
type scale struct{ builds, apps, branches int }

// populate adds s.builds builds across s.apps apps and s.branches
// branches, each with a small index; the measured app is one of the
// apps, and its main branch keeps pointing at the measured commit.
func populate(ctx context.Context, d storage.Driver, ds *dataset, s scale) error {
	store := ref.NewStore(d)
	perApp, branches := s.builds/s.apps, s.branches/s.apps
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for a := range s.apps {
		app, first := artifact.App{Org: "scale", Name: fmt.Sprintf("app-%04d", a)}, 0
		if a == 0 {
			app, first = ds.app, 1 // main and the measured build are there already
		}
		g.Go(func() error {
			for i := first; i < perApp; i++ {
				branch := fmt.Sprintf("branch-%d", i%branches)
				if err := publishDirect(ctx, d, store, app, commitOf(app.String(), i), branch, ds.smallIndex); err != nil {
					return fmt.Errorf("populate %s: %w", app, err)
				}
			}
			return nil
		})
	}
	return g.Wait()
}
