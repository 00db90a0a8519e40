//go:build chaoshook

package server

// The chaos tests (cmd/uplink/chaos_*_test.go) build the binary with
// -tags chaoshook to kill it with SIGKILL at a chosen storage write; a
// production build has none of this.
//
//	UPLINK_CHAOS_KILL_AT_WRITE=N    before the Nth write (put or delete)
//	                                of a publish's metadata
//	UPLINK_CHAOS_KILL_AFTER_BYTES=N once an artifact put has read N bytes
//	                                of its body

import (
	"context"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/uplinkhq/uplink/storage"
)

func chaosStorage(d storage.Driver) storage.Driver {
	atWrite, _ := strconv.ParseInt(os.Getenv("UPLINK_CHAOS_KILL_AT_WRITE"), 10, 64)
	afterBytes, _ := strconv.ParseInt(os.Getenv("UPLINK_CHAOS_KILL_AFTER_BYTES"), 10, 64)
	if atWrite <= 0 && afterBytes <= 0 {
		return d
	}
	return &chaosDriver{Driver: d, atWrite: atWrite, afterBytes: afterBytes}
}

type chaosDriver struct {
	storage.Driver
	atWrite, afterBytes int64
	writes              atomic.Int64
}

// publishKeys are the prefixes a publish writes under.
var publishKeys = []string{"meta/publishes/", "meta/builds/", "meta/journal/", "meta/apps/", "meta/branches/", "meta/tags/"}

func die() {
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // never write past this point
}

func (c *chaosDriver) write(key string) {
	for _, p := range publishKeys {
		if strings.HasPrefix(key, p) {
			if c.writes.Add(1) == c.atWrite {
				die()
			}
			return
		}
	}
}

func (c *chaosDriver) Put(ctx context.Context, key string, r io.Reader, size int64, cond storage.Condition) (storage.Info, error) {
	c.write(key)
	if c.afterBytes > 0 && strings.HasPrefix(key, "deployments/") {
		// A plain reader, not the file's ReaderAt: the S3 driver then
		// uploads parts one after the other, and the kill lands between.
		r = &killingReader{r: r, left: c.afterBytes}
	}
	return c.Driver.Put(ctx, key, r, size, cond)
}

func (c *chaosDriver) Delete(ctx context.Context, key string) error {
	c.write(key)
	return c.Driver.Delete(ctx, key)
}

type killingReader struct {
	r    io.Reader
	left int64
}

func (k *killingReader) Read(p []byte) (int, error) {
	if k.left <= 0 {
		die()
	}
	if int64(len(p)) > k.left {
		p = p[:k.left]
	}
	n, err := k.r.Read(p)
	k.left -= int64(n)
	return n, err
}
