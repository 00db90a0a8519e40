package distribution_test

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/cache"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
)

// newFallbacks is newRepositories behind Fallbacks, remembering clients'
// indexes (its metrics in reg, when given).
func newFallbacks(t *testing.T, reg ...prometheus.Registerer) (*distribution.Fallbacks, []string) {
	repos, commits := newRepositories(t)
	cfg := distribution.ClientIndexConfig{}
	if len(reg) > 0 {
		cfg.Registerer = reg[0]
	}
	return &distribution.Fallbacks{Protocol: repos, Clients: distribution.NewClientIndexes(cfg)}, commits
}

func branchReq(file, client string) distribution.Request {
	return distribution.Request{Ref: "main", Org: "acme", App: "hello", Arch: "x86_64", File: file,
		Client: netip.MustParseAddr(client)}
}

// received records that client got the index of commit through main.
func received(t *testing.T, p distribution.Protocol, client, commit string) {
	p.Received(t.Context(), branchReq(artifact.IndexFile, client), ref.Resolution{Kind: ref.KindBranch, Commit: commit})
}

func TestFallbacks(t *testing.T) {
	reg := prometheus.NewRegistry()
	f, commits := newFallbacks(t, reg)
	old, cur := commits[0], commits[1]
	const client = "10.0.0.7"
	for file, want := range map[string]string{"b.apk": cur + " b2", "a.apk": old + " a1"} {
		c, body, err := fetchPackage(t, f, branchReq(file, client))
		if err != nil || c+" "+body != want {
			t.Errorf("%s: %s %q %v, want %s", file, c, body, err, want)
		}
	}
	if _, _, err := fetchPackage(t, f, branchReq("c.apk", client)); !storage.IsNotFound(err) {
		t.Errorf("c.apk: %v, want not found", err)
	}

	// The client last got the older index through main: its packages come
	// from that commit first; an index always comes from the current one.
	received(t, f, client, old)
	if c, body, err := fetchPackage(t, f, branchReq("b.apk", client)); err != nil || c != old || body != "b1" {
		t.Errorf("b.apk for a client of the older index: %s %q %v", c, body, err)
	}
	if c, _, err := fetchPackage(t, f, branchReq(artifact.IndexFile, client)); err != nil || c != cur {
		t.Errorf("index as a package: from %s (%v), want %s", c, err, cur)
	}
	// Not in the client's commit: the current one, then the others.
	if _, _, err := fetchPackage(t, f, branchReq("c.apk", client)); !storage.IsNotFound(err) {
		t.Errorf("c.apk for a client of the older index: %v, want not found", err)
	}
	// A commit that is not in the branch's window is not the client's.
	const stranger = "10.0.0.8"
	received(t, f, stranger, "00000000000000000000000000000000000000ff")
	if c, body, err := fetchPackage(t, f, branchReq("b.apk", stranger)); err != nil || c != cur || body != "b2" {
		t.Errorf("b.apk for a client of a commit outside the window: %s %q %v", c, body, err)
	}
	for result, want := range map[string]float64{"served": 1, "missing": 1, "outside_window": 1} {
		if n := counter(t, reg, "uplink_distribution_client_index_hits_total", result); n != want {
			t.Errorf("client index hits %s: %v, want %v", result, n, want)
		}
	}
}

// recorder records the commit (and the number of fallbacks) each Package
// asks for, and fails the commits in fail.
type recorder struct {
	distribution.Protocol
	mu    sync.Mutex
	asked []string
	fail  map[string]error
}

func (r *recorder) Package(ctx context.Context, req distribution.Request, res ref.Resolution) (*distribution.Package, error) {
	r.mu.Lock()
	r.asked = append(r.asked, res.Commit+"+"+strconv.Itoa(len(res.Fallback)))
	err := r.fail[res.Commit]
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return r.Protocol.Package(ctx, req, res)
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	asked := r.asked
	r.asked = nil
	return asked
}

// TestFallbacksOneCommitAtATime: the inner Protocol is asked for one
// commit at a time, the client's first, then the current one, then the
// earlier ones (not the client's again), moving on only when the file is
// not there; an index is passed through as it was resolved.
func TestFallbacksOneCommitAtATime(t *testing.T) {
	f, commits := newFallbacks(t)
	old, cur := commits[0], commits[1]
	rec := &recorder{Protocol: f.Protocol}
	f.Protocol = rec
	const client, other = "10.0.0.7", "10.0.0.9"
	received(t, f, client, old)
	for _, c := range []struct {
		file, client string
		want         []string
	}{
		{"a.apk", other, []string{cur + "+0", old + "+0"}},
		{"b.apk", other, []string{cur + "+0"}},
		{"b.apk", client, []string{old + "+0"}},
		{"c.apk", client, []string{old + "+0", cur + "+0"}},
		{artifact.IndexFile, client, []string{cur + "+1"}},
	} {
		fetchPackage(t, f, branchReq(c.file, c.client))
		if got := rec.take(); !slices.Equal(got, c.want) {
			t.Errorf("%s for %s: asked %v, want %v", c.file, c.client, got, c.want)
		}
	}
	// Storage that cannot answer is not a missing file: no other commit
	// is tried.
	rec.fail = map[string]error{cur: distribution.ErrStorageTimeout}
	if _, _, err := fetchPackage(t, f, branchReq("a.apk", other)); !errors.Is(err, distribution.ErrStorageTimeout) {
		t.Errorf("a.apk with storage timing out: %v", err)
	}
	if got := rec.take(); !slices.Equal(got, []string{cur + "+0"}) {
		t.Errorf("with storage timing out: asked %v", got)
	}
}

// openCounter counts the opens of the storage under it.
type openCounter struct {
	storage.Getter
	opens atomic.Int32
}

func (s *openCounter) Open(ctx context.Context, key string) (storage.Object, error) {
	s.opens.Add(1)
	return s.Getter.Open(ctx, key)
}

// TestFallbacksCacheHitOpensNothing: with the artifact cache under
// Fallbacks (as uplink serve wires it), a package asked for through a
// branch and found in the client's commit or the current one is served
// from the cache the second time without a storage request; one only in
// an earlier commit still answers from that commit, from the cache too.
func TestFallbacksCacheHitOpensNothing(t *testing.T) {
	f, commits := newFallbacks(t)
	old, cur := commits[0], commits[1]
	repos := f.Protocol.(*distribution.Repositories)
	store := &openCounter{Getter: repos.Storage}
	repos.Storage = store
	reg := prometheus.NewRegistry()
	artifacts, err := cache.NewArtifacts(repos, t.TempDir(), 1<<20, reg)
	if err != nil {
		t.Fatal(err)
	}
	f.Protocol = artifacts
	const client, other = "10.0.0.7", "10.0.0.9"
	received(t, f, client, old)

	fills := 0.0
	for _, c := range []struct {
		what, file, client, commit, body string
		maxOpens                         int32 // on the second request
	}{
		{"current commit's", "b.apk", other, cur, "b2", 0},
		{"client's commit's", "b.apk", client, old, "b1", 0},
		// One miss of the current commit, which has no such file.
		{"earlier commit's", "a.apk", other, old, "a1", 1},
	} {
		for i := range 2 {
			opens := store.opens.Load()
			req := branchReq(c.file, c.client)
			res, err := f.Resolve(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			pkg, err := f.Package(t.Context(), req, res)
			if err != nil {
				t.Fatalf("%s %s (%d): %v", c.what, c.file, i, err)
			}
			fromFile := pkg.File() != nil
			body, err := io.ReadAll(pkg)
			pkg.Close()
			if err != nil || pkg.Commit != c.commit || string(body) != c.body {
				t.Errorf("%s %s (%d): %s %q %v, want %s %q", c.what, c.file, i, pkg.Commit, body, err, c.commit, c.body)
			}
			if i == 0 {
				fills++
				waitFor(t, func() bool { return counter(t, reg, "uplink_artifact_cache_fills_total") == fills }, "filled")
				continue
			}
			if n := store.opens.Load() - opens; !fromFile || n > c.maxOpens {
				t.Errorf("%s %s again: from a file %v, %d storage opens, want a file and at most %d",
					c.what, c.file, fromFile, n, c.maxOpens)
			}
		}
	}
}
