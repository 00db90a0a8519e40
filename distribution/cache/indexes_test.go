package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/ref"
)

// indexSource is a Protocol whose indexes are size bytes, counting loads.
type indexSource struct {
	distribution.Protocol
	size  int
	loads atomic.Int32
	gate  chan struct{} // when set, loads wait on it
	err   error
}

func (s *indexSource) Index(_ context.Context, _ distribution.Request, res ref.Resolution) (*distribution.Index, error) {
	s.loads.Add(1)
	if s.gate != nil {
		<-s.gate
	}
	if s.err != nil {
		return nil, s.err
	}
	return distribution.NewIndex(res.Commit, make([]byte, s.size)), nil
}

func indexReq(arch string) distribution.Request {
	return distribution.Request{Ref: "main", Org: "acme", App: "hello", Arch: arch, File: "APKINDEX.tar.gz"}
}

func at(commit string) ref.Resolution { return ref.Resolution{Kind: ref.KindBranch, Commit: commit} }

func TestIndexesSingleflight(t *testing.T) {
	src := &indexSource{size: 10, gate: make(chan struct{})}
	c := NewIndexes(src, 1<<20, "", nil)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := c.Index(t.Context(), indexReq("x86_64"), at("c1")); err != nil {
				t.Error(err)
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	close(src.gate)
	wg.Wait()
	if _, err := c.Index(t.Context(), indexReq("x86_64"), at("c1")); err != nil || src.loads.Load() != 1 {
		t.Fatalf("%d loads (err %v), want 1", src.loads.Load(), err)
	}
}

func TestIndexesBoundedByBytes(t *testing.T) {
	src := &indexSource{size: 100}
	c := NewIndexes(src, 250, "", nil)
	for i := range 3 {
		c.Index(t.Context(), indexReq("x86_64"), at(fmt.Sprint("c", i)))
	}
	if c.size != 200 || c.lru.Len() != 2 {
		t.Fatalf("holding %d bytes in %d indexes, want 200 in 2", c.size, c.lru.Len())
	}
	c.Index(t.Context(), indexReq("x86_64"), at("c0")) // evicted first
	if src.loads.Load() != 4 {
		t.Fatalf("%d loads, want 4", src.loads.Load())
	}
	big := NewIndexes(&indexSource{size: 300}, 250, "", nil)
	big.Index(t.Context(), indexReq("x86_64"), at("c0"))
	if big.lru.Len() != 0 {
		t.Fatal("an index larger than the cache was kept")
	}
}

func TestIndexesFailureNotKept(t *testing.T) {
	src := &indexSource{size: 10, err: errors.New("storage down")}
	c := NewIndexes(src, 1<<20, "", nil)
	if _, err := c.Index(t.Context(), indexReq("x86_64"), at("c1")); err == nil {
		t.Fatal("no error")
	}
	src.err = nil
	if _, err := c.Index(t.Context(), indexReq("x86_64"), at("c1")); err != nil || src.loads.Load() != 2 {
		t.Fatalf("%d loads (err %v), want 2", src.loads.Load(), err)
	}
}

// A caller that gives up does not fail the load the others wait on.
func TestIndexesCallerGivesUp(t *testing.T) {
	src := &indexSource{size: 10, gate: make(chan struct{})}
	c := NewIndexes(src, 1<<20, "", nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() {
		_, err := c.Index(ctx, indexReq("x86_64"), at("c1"))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("gave up with %v", err)
	}
	close(src.gate)
	if _, err := c.Index(t.Context(), indexReq("x86_64"), at("c1")); err != nil || src.loads.Load() != 1 {
		t.Fatalf("%d loads (err %v), want 1", src.loads.Load(), err)
	}
}
