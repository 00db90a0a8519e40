package distribution_test

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"testing"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
)

// newRepositories publishes two commits to main: the older one has a.apk
// and b.apk, the newer one b.apk (other bytes) only.
func newRepositories(t *testing.T) (*distribution.Repositories, []string) {
	d := newStore(t)
	store := ref.NewStore(d)
	var commits []string
	for i, files := range []map[string]string{
		{"a.apk": "a1", "b.apk": "b1"},
		{"b.apk": "b2"},
	} {
		c := fmt.Sprintf("%040x", i+1)
		files[artifact.IndexFile] = "index of " + c
		for name, body := range files {
			if _, err := d.Put(t.Context(), artifact.Key(acme, c, "x86_64", name), bytes.NewReader([]byte(body)), int64(len(body)), storage.Condition{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := store.Publish(t.Context(), acme, ref.PublishRequest{Commit: c, Branch: "main"}); err != nil {
			t.Fatal(err)
		}
		commits = append(commits, c)
	}
	return &distribution.Repositories{Storage: d, Refs: store}, commits
}

func fetchPackage(t *testing.T, p distribution.Protocol, req distribution.Request) (commit, body string, err error) {
	t.Helper()
	res, err := p.Resolve(t.Context(), req)
	if err != nil {
		return "", "", err
	}
	pkg, err := p.Package(t.Context(), req, res)
	if err != nil {
		return "", "", err
	}
	defer pkg.Close()
	b, err := io.ReadAll(pkg)
	return pkg.Commit, string(b), err
}

// TestRepositoriesOneCommit: Repositories answers from the resolved commit
// alone, through a branch too (the fallbacks are Fallbacks').
func TestRepositoriesOneCommit(t *testing.T) {
	repos, commits := newRepositories(t)
	old, cur := commits[0], commits[1]
	req := func(file string) distribution.Request {
		return distribution.Request{Ref: "main", Org: "acme", App: "hello", Arch: "x86_64", File: file,
			Client: netip.MustParseAddr("10.0.0.7")}
	}
	if c, body, err := fetchPackage(t, repos, req("b.apk")); err != nil || c != cur || body != "b2" {
		t.Errorf("b.apk: %s %q %v, want %s b2", c, body, err, cur)
	}
	// Only the older commit has a.apk.
	if _, _, err := fetchPackage(t, repos, req("a.apk")); !storage.IsNotFound(err) {
		t.Errorf("a.apk through main: %v, want not found", err)
	}
	res := ref.Resolution{Kind: ref.KindCommit, Commit: old}
	pkg, err := repos.Package(t.Context(), req("a.apk"), res)
	if err != nil || pkg.Commit != old {
		t.Fatalf("a.apk of %s: %+v %v", old, pkg, err)
	}
	pkg.Close()
	cres, _ := repos.Resolve(t.Context(), req(artifact.IndexFile))
	idx, err := repos.Index(t.Context(), req(artifact.IndexFile), cres)
	if err != nil || string(idx.Data) != "index of "+cur || idx.Commit != cur || idx.ETag == "" {
		t.Errorf("index: %+v %v", idx, err)
	}
}
