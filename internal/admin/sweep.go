package admin

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/distribution/ref"
)

// SpoolPattern names upload spool files in Config.TempDir (os.CreateTemp
// replaces the '*').
const SpoolPattern = "upload-*"

// MultipartAborter aborts multipart uploads that were started before
// olderThan ago under the given key prefixes and never completed (the S3
// driver; a crashed upload leaves its parts billed forever otherwise).
type MultipartAborter interface {
	AbortIncompleteUploads(ctx context.Context, olderThan time.Duration, prefixes ...string) (int, error)
}

// Sweeper cleans up after crashes, at start and then every Interval: it
// completes publishes interrupted between their writes, removes upload
// spool files that no live process holds, and aborts stale S3 multipart
// uploads. Zero durations take the Default* values.
type Sweeper struct {
	Refs *ref.Store
	// PublishGrace is how old an unfinished publish must be before the
	// sweeper completes it: a live one takes far less.
	PublishGrace time.Duration
	// SpoolDir holds upload spool files (Config.TempDir); SpoolMaxAge is
	// how long since its last write one may be removed, if no live
	// process holds it.
	SpoolDir    string
	SpoolMaxAge time.Duration
	// Multipart is nil with storage that has no multipart uploads.
	Multipart       MultipartAborter
	MultipartMaxAge time.Duration
	Interval        time.Duration
	Logger          *slog.Logger
}

// Defaults of the Sweeper's bounds (flags of uplink serve).
const (
	DefaultPublishGrace    = time.Minute
	DefaultSpoolMaxAge     = time.Hour
	DefaultMultipartMaxAge = 24 * time.Hour
	DefaultSweepInterval   = time.Minute
)

// or returns d when v is not positive.
func or(v, d time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return d
}

// multipartPrefixes are where uplink and its CI write objects.
var multipartPrefixes = []string{"deployments/", "meta/"}

// StartTimeout bounds the sweep a server does before it serves.
const StartTimeout = 5 * time.Second

// Run sweeps every Interval until ctx ends; the server sweeps once itself
// before it serves (see StartTimeout).
func (s *Sweeper) Run(ctx context.Context) {
	t := time.NewTicker(or(s.Interval, DefaultSweepInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.Sweep(ctx)
	}
}

// Sweep does one round; failures are logged and retried next round.
func (s *Sweeper) Sweep(ctx context.Context) {
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	if s.Refs != nil {
		n, err := s.Refs.Recover(ctx, or(s.PublishGrace, DefaultPublishGrace))
		if n > 0 {
			log.Warn("sweep: completed publishes interrupted by a crash or a storage failure", "count", n)
		}
		if err != nil && ctx.Err() == nil {
			log.Error("sweep: completing interrupted publishes", "err", err)
		}
	}
	if s.SpoolDir != "" {
		n, bytes, err := s.sweepSpool()
		if n > 0 {
			log.Warn("sweep: removed upload spool files left by a crash", "count", n, "bytes", bytes, "dir", s.SpoolDir)
		}
		if err != nil {
			log.Error("sweep: upload spool files", "dir", s.SpoolDir, "err", err)
		}
	}
	if s.Multipart != nil {
		n, err := s.Multipart.AbortIncompleteUploads(ctx, or(s.MultipartMaxAge, DefaultMultipartMaxAge), multipartPrefixes...)
		if n > 0 {
			log.Warn("sweep: aborted incomplete multipart uploads", "count", n)
		}
		if err != nil && ctx.Err() == nil {
			log.Error("sweep: incomplete multipart uploads", "err", err)
		}
	}
}

func (s *Sweeper) sweepSpool() (int, int64, error) {
	entries, err := os.ReadDir(s.SpoolDir)
	if err != nil {
		return 0, 0, err
	}
	prefix := strings.TrimSuffix(SpoolPattern, "*")
	var n int
	var size int64
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < or(s.SpoolMaxAge, DefaultSpoolMaxAge) {
			continue
		}
		path := filepath.Join(s.SpoolDir, e.Name())
		if inUse(path) {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		n++
		size += info.Size()
	}
	return n, size, errors.Join(errs...)
}
