package server_test

import (
	"net/http"
	"sync"
	"testing"

	"github.com/uplinkhq/uplink/internal/apktest"
)

// storageReads sums the storage calls a node made so far.
func storageReads(t *testing.T, n *node) float64 {
	var sum float64
	for _, op := range []string{"open", "stat", "list"} {
		for _, result := range []string{"ok", "not_found", "condition_failed", "error"} {
			sum += metric(t, n, `uplink_storage_requests_total{op="`+op+`",result="`+result+`"}`)
		}
	}
	return sum
}

// TestColdHerd: many instances fetch an index no cache holds at the same
// moment (a cluster re-bootstrapping); storage is read once per thing to
// read (the branch pointer unless Redis holds it, the index), not once per
// request.
func TestColdHerd(t *testing.T) {
	t.Run("without Redis", func(t *testing.T) { coldHerd(t, "", 2) })
	// With Redis the publish primed the pointer: only the index is read.
	t.Run("with Redis", func(t *testing.T) { coldHerd(t, "redis://"+testenvRedis(t)+"/0", 1) })
}

func coldHerd(t *testing.T, redis string, want float64) {
	cfg := s3Config(t, baseConfig(t))
	cfg.Redis = redis
	publisher := start(t, cfg)
	publisher.publish(t, commitOf("A"), "main", hello(t, apktest.NewKey(t), "1.0-r0", "A"))
	cfg = publisher.cfg
	cfg.DataDir = t.TempDir()
	n := start(t, cfg) // a fresh replica: nothing cached

	before := storageReads(t, n)
	const clients = 200
	var wg sync.WaitGroup
	ready := make(chan struct{})
	codes := make(chan int, clients)
	for range clients {
		wg.Go(func() {
			<-ready
			resp, err := http.Get(n.repo("main") + "/x86_64/APKINDEX.tar.gz")
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	close(ready)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Fatalf("a herd request got %d", c)
		}
	}
	if reads := storageReads(t, n) - before; reads != want {
		t.Fatalf("%d concurrent cold requests made %v storage reads, want %v", clients, reads, want)
	}
}
