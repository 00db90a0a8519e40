package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sync/errgroup"
)

// profiles profiles each uplink contender of sc in turn.
func (b *bench) profiles(ctx context.Context, sc scenario, cs []contender) error {
	if !b.pprof || !b.plan.profile {
		return nil
	}
	if err := os.MkdirAll(b.outDir, 0o755); err != nil {
		return err
	}
	for _, c := range cs {
		if c.up == nil {
			continue
		}
		if err := b.profile(ctx, sc, c); err != nil {
			return err
		}
	}
	return nil
}

// profile runs one more wrk load on an uplink contender, not counted in
// the table, while fetching its CPU and allocation profiles for the
// same seconds into outDir.
func (b *bench) profile(ctx context.Context, sc scenario, c contender) error {
	run := b.run(c.url, b.plan.profileConns, b.plan.duration)
	seconds := max(1, int(run.d.Seconds())-1)
	prefix := filepath.Join(b.outDir, slug(sc.name)+"-"+slug(c.name))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		_, err := b.wrk(gctx, run)
		return err
	})
	for endpoint, file := range map[string]string{"profile": "cpu", "allocs": "allocs"} {
		url := fmt.Sprintf("%s/debug/pprof/%s?seconds=%d", c.up.admin, endpoint, seconds)
		g.Go(func() error { return b.save(gctx, url, prefix+"-"+file+".pprof") })
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("profiling: %w", err)
	}
	b.logf("  profiles: %s-{cpu,allocs}.pprof", prefix)
	return nil
}

func (b *bench) save(ctx context.Context, url, path string) error {
	resp, err := b.get(ctx, url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// slug is name in a file name: "uplink-s3 (warm cache)" is
// "uplink-s3-warm-cache".
func slug(name string) string {
	f := strings.FieldsFunc(name, func(r rune) bool {
		return !(r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	})
	return strings.Join(f, "-")
}
