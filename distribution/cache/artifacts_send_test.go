package cache

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
)

// atCommitResolver resolves every ref to testCommit.
type atCommitResolver struct{}

func (atCommitResolver) Resolve(context.Context, artifact.App, string) (ref.Resolution, error) {
	return atCommit, nil
}

// serveArtifacts is the distribution handler over c, as uplink serves it.
func serveArtifacts(t *testing.T, s *countingStorage) string {
	t.Helper()
	c, err := NewArtifacts(&distribution.Repositories{Storage: s, Refs: atCommitResolver{}}, t.TempDir(), 64<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	distribution.New(distribution.Config{Protocol: distribution.NewAccess(c, nil, nil)}).Register(e)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv.URL + "/distribution/" + testCommit + "/acme/hello/x86_64/"
}

// TestArtifactsFollowersOverHTTP: clients that join a fill get every
// byte of it as it is written (sent from the file being filled), with one
// storage read between them.
func TestArtifactsFollowersOverHTTP(t *testing.T) {
	const size = 3<<20 + 12345
	s := newArtifactStore(t, map[string]int{"a.apk": size})
	s.gate = make(chan struct{})
	url := serveArtifacts(t, s) + "a.apk"
	want := artifactBody("a.apk", size)
	var wg sync.WaitGroup
	bodies := make([][]byte, 8)
	for i := range bodies {
		wg.Go(func() {
			resp, err := http.Get(url)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			bodies[i], _ = io.ReadAll(resp.Body)
		})
	}
	for s.opens.Load() == 0 {
		runtime.Gosched()
	}
	close(s.gate)
	wg.Wait()
	for i, b := range bodies {
		if string(b) != string(want) {
			t.Fatalf("client %d got %d bytes, not the package's %d", i, len(b), len(want))
		}
	}
	if n := s.opens.Load(); n != 1 {
		t.Fatalf("%d storage reads for one herd", n)
	}
}

// TestArtifactsFollowerFillFails: when storage breaks mid-fill, a client
// following it gets a response cut short, never a full-length body.
func TestArtifactsFollowerFillFails(t *testing.T) {
	const size = 2 << 20
	s := newArtifactStore(t, map[string]int{"a.apk": size})
	s.failAfter = 1 << 20
	url := serveArtifacts(t, s) + "a.apk"
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if rerr == nil && len(body) == size {
		t.Fatalf("a failed fill was answered in full: %d bytes", len(body))
	}
	s.failAfter = 0
	resp, err = http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, rerr = io.ReadAll(resp.Body)
	resp.Body.Close()
	if rerr != nil || string(body) != string(artifactBody("a.apk", size)) {
		t.Fatalf("after the failure: %d bytes, %v", len(body), rerr)
	}
}
