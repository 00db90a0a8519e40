package apktest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chainguard-dev/clog"
	"github.com/chainguard-dev/go-apk/pkg/apk"
	apkfs "github.com/chainguard-dev/go-apk/pkg/fs"

	"github.com/uplinkhq/uplink/internal/apkfile"
)

// Index is a repository index downloaded at one moment and verified by
// go-apk, like the cached index an apk client installs against until it
// refreshes. Install from it to fetch packages later (two-phase use).
type Index struct {
	URL         string // repository base URL, without a trailing slash
	Arch        string
	Raw         []byte // APKINDEX.tar.gz exactly as served
	Description string
	Packages    []*apk.Package // as parsed by go-apk

	key Key
}

// Install fetches the index of repoURL for DefaultArch, trusting only key,
// and installs packages (with dependencies) into a fresh root, which it
// returns. Every call downloads the index anew. Failures such as a bad
// index signature, an unknown package or a failed or corrupt download are
// returned, not reported on t.
func Install(t testing.TB, ctx context.Context, repoURL string, key Key, packages ...string) (root string, err error) {
	t.Helper()
	ix, err := FetchIndex(testLogger(ctx, t), repoURL, key, DefaultArch)
	if err != nil {
		return "", err
	}
	return ix.Install(t, ctx, packages...)
}

// FetchIndex downloads <repoURL>/<arch>/APKINDEX.tar.gz and has go-apk verify
// its signature against key alone and parse it.
func FetchIndex(ctx context.Context, repoURL string, key Key, arch string) (*Index, error) {
	base := strings.TrimSuffix(repoURL, "/")
	u := apk.IndexURL(base, arch)
	client := newClient(nil)
	defer client.CloseIdleConnections()
	raw, err := get(ctx, client, u)
	if err != nil {
		return nil, err
	}

	// go-apk caches remote indexes per URL for the life of the process, so
	// a second fetch of the same URL would silently reuse the first. Local
	// index files are re-read per path, so verify a copy in a fresh directory.
	dir, err := os.MkdirTemp("", "apktest-index-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := os.Mkdir(filepath.Join(dir, arch), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, arch, "APKINDEX.tar.gz"), raw, 0o644); err != nil {
		return nil, err
	}
	keys := map[string][]byte{key.Name: key.PublicPEM()}
	if _, err := apk.GetRepositoryIndexes(ctx, []string{dir}, keys, arch); err != nil {
		return nil, fmt.Errorf("apktest: index %s: %w", u, err)
	}
	// go-apk tries every trusted key whatever name the signature carries;
	// apk-tools opens only /etc/apk/keys/<that name>.
	if name := apkfile.FirstEntry(raw); name != ".SIGN.RSA."+key.Name {
		return nil, fmt.Errorf("apktest: index %s: UNTRUSTED signature: entry %q, trusted key %s", u, name, key.Name)
	}
	parsed, err := apk.IndexFromArchive(io.NopCloser(bytes.NewReader(raw)))
	if err != nil {
		return nil, fmt.Errorf("apktest: index %s: %w", u, err)
	}
	return &Index{URL: base, Arch: arch, Raw: raw, Description: parsed.Description, Packages: parsed.Packages, key: key}, nil
}

// Resolve picks packages and their dependencies from the index, in install
// order (dependencies first), as go-apk's resolver does.
func (ix *Index) Resolve(ctx context.Context, packages ...string) ([]*apk.RepositoryPackage, error) {
	// go-apk would download from <base>/<index arch>/; apk-tools uses the
	// package's A: (apk-protocol.md §1), so give each arch its own repository.
	byArch := map[string][]*apk.Package{}
	var archs []string
	for _, p := range ix.Packages {
		a := p.Arch
		if a == "" {
			a = ix.Arch
		}
		if byArch[a] == nil {
			archs = append(archs, a)
		}
		byArch[a] = append(byArch[a], p)
	}
	var named []apk.NamedIndex
	for _, a := range archs {
		repo := &apk.Repository{URI: ix.URL + "/" + a}
		named = append(named, apk.NewNamedRepositoryWithIndex("", repo.WithIndex(&apk.APKIndex{Packages: byArch[a]})))
	}
	pkgs, _, err := apk.NewPkgResolver(ctx, named).GetPackagesWithDependencies(ctx, packages)
	if err != nil {
		return nil, fmt.Errorf("apktest: resolve %v: %w", packages, err)
	}
	return pkgs, nil
}

// Install creates a fresh root under t.TempDir() with go-apk (InitDB,
// InitKeyring with exactly the index's key, SetRepositories, SetWorld),
// resolves packages against this index and has go-apk download and install
// them. Downloads are checked as apk-tools does: control member against C:,
// data member against datahash.
func (ix *Index) Install(t testing.TB, ctx context.Context, packages ...string) (root string, err error) {
	t.Helper()
	ctx = testLogger(ctx, t)
	pkgs, err := ix.Resolve(ctx, packages...)
	if err != nil {
		return "", err
	}

	client, err := packageClient(pkgs)
	if err != nil {
		return "", err
	}
	defer client.CloseIdleConnections()
	root = t.TempDir()
	a, err := newAPK(apkfs.DirFS(root), ix.Arch, client)
	if err != nil {
		return "", err
	}
	if err := a.InitDB(ctx); err != nil {
		return "", fmt.Errorf("apktest: init db: %w", err)
	}
	keyFile := filepath.Join(t.TempDir(), ix.key.Name)
	if err := os.WriteFile(keyFile, ix.key.PublicPEM(), 0o644); err != nil {
		return "", err
	}
	if err := a.InitKeyring(ctx, []string{keyFile}, nil); err != nil {
		return "", fmt.Errorf("apktest: init keyring: %w", err)
	}
	if err := a.SetRepositories(ctx, []string{ix.URL}); err != nil {
		return "", fmt.Errorf("apktest: %w", err)
	}
	if err := a.SetWorld(ctx, packages); err != nil {
		return "", fmt.Errorf("apktest: %w", err)
	}
	inst := make([]apk.InstallablePackage, len(pkgs))
	for i, p := range pkgs {
		inst[i] = p
	}
	if err := a.InstallPackages(ctx, nil, inst); err != nil {
		return "", fmt.Errorf("apktest: %w", err)
	}
	return root, nil
}

// FetchPackage downloads the best match for name (e.g. "hello" or
// "hello=1.0-r0") through go-apk, checked against the index like Install.
func (ix *Index) FetchPackage(ctx context.Context, name string) ([]byte, error) {
	pkgs, err := ix.Resolve(ctx, name)
	if err != nil {
		return nil, err
	}
	p := pkgs[len(pkgs)-1] // dependencies come first
	client, err := packageClient(pkgs)
	if err != nil {
		return nil, err
	}
	defer client.CloseIdleConnections()
	a, err := newAPK(apkfs.NewMemFS(), ix.Arch, client)
	if err != nil {
		return nil, err
	}
	rc, err := a.FetchPackage(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("apktest: %w", err)
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// newAPK returns a go-apk client on fsys that downloads with client.
func newAPK(fsys apkfs.FullFS, arch string, client *http.Client) (*apk.APK, error) {
	// No WithCache: go-apk then keeps no package cache between calls.
	a, err := apk.New(apk.WithFS(fsys), apk.WithArch(arch), apk.WithIgnoreMknodErrors(true))
	if err != nil {
		return nil, fmt.Errorf("apktest: %w", err)
	}
	a.SetClient(client)
	return a, nil
}

// packageClient returns an HTTP client that verifies downloads of pkgs.
func packageClient(pkgs []*apk.RepositoryPackage) (*http.Client, error) {
	want := map[string]*apk.Package{}
	for _, p := range pkgs {
		u, err := url.Parse(p.URL())
		if err != nil {
			return nil, err
		}
		want[u.Path] = p.Package
	}
	return newClient(want), nil
}

// newClient returns an HTTP client that follows redirects like libfetch
// (301/302/303 only, at most 5 hops) and, for responses to URL paths in
// want, checks the package against its index entry.
func newClient(want map[string]*apk.Package) *http.Client {
	return &http.Client{
		Transport: &verifier{base: http.DefaultTransport.(*http.Transport).Clone(), want: want},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if c := req.Response.StatusCode; c == http.StatusTemporaryRedirect || c == http.StatusPermanentRedirect {
				return fmt.Errorf("apktest: apk clients do not follow HTTP %d", c)
			}
			if len(via) > 5 {
				return errors.New("apktest: more than 5 redirects")
			}
			return nil
		},
	}
}

// verifier adds the check go-apk lacks: it installs whatever bytes it
// downloads, while apk-tools requires the control member to hash to the
// signed index's C: and the data member to match the control's datahash.
type verifier struct {
	base http.RoundTripper
	want map[string]*apk.Package
}

func (v *verifier) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := v.base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	orig := req // after redirects, key on the URL go-apk asked for
	for orig.Response != nil {
		orig = orig.Response.Request
	}
	pkg, ok := v.want[orig.URL.Path]
	if !ok {
		return resp, nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if err := apkfile.Verify(body, pkg.ChecksumString()); err != nil {
		return nil, fmt.Errorf("apktest: %w", err) // the client adds the URL
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

func get(ctx context.Context, client *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("apktest: GET %s: %s", u, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// testLogger sends go-apk's log lines (via clog) to t.Log.
func testLogger(ctx context.Context, t testing.TB) context.Context {
	dropTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	h := slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{ReplaceAttr: dropTime})
	return clog.WithLogger(ctx, clog.New(h))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
