//go:build unix

package admin

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestSweepSpool: the sweep removes spool files untouched for longer than
// the bound that no live process holds, and nothing else.
func TestSweepSpool(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-2 * time.Hour)
	mk := func(name string, mtime time.Time) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("partial upload"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mk("upload-crashed", old)
	mk("upload-young", time.Now())
	mk("admin-token", old)
	held := mk("upload-held", old)
	f, err := os.Open(held)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := lockFile(f); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "upload-dir"), 0o755); err != nil {
		t.Fatal(err)
	}

	s := &Sweeper{SpoolDir: dir, SpoolMaxAge: time.Hour}
	s.Sweep(t.Context())
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"admin-token", "upload-dir", "upload-held", "upload-young"}; !slices.Equal(names, want) {
		t.Fatalf("after the sweep: %v, want %v", names, want)
	}

	// Once its process lets go, the held file goes too.
	f.Close()
	s.Sweep(t.Context())
	if _, err := os.Stat(held); !os.IsNotExist(err) {
		t.Fatalf("a stale spool file nobody holds was kept: %v", err)
	}
}
