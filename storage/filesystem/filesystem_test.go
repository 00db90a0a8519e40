package filesystem_test

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/filesystem"
	"github.com/uplinkhq/uplink/storage/storagetest"
)

func newDriver(t *testing.T, dir string) *filesystem.Driver {
	t.Helper()
	d, err := filesystem.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Driver { return newDriver(t, t.TempDir()) })
}

func TestConformanceInstrumented(t *testing.T) {
	reg := prometheus.NewRegistry()
	storagetest.Run(t, func(t *testing.T) storage.Driver {
		// One registry for all: Instrument must tolerate re-registration.
		return storage.Instrument(newDriver(t, t.TempDir()), reg)
	})

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "uplink_storage_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			var op, result string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "op":
					op = l.GetValue()
				case "result":
					result = l.GetValue()
				default:
					t.Errorf("unexpected label %s", l.GetName())
				}
			}
			counts[op+"/"+result] = m.GetCounter().GetValue()
		}
	}
	for _, k := range []string{"open/ok", "open/not_found", "stat/not_found", "put/ok", "put/condition_failed", "put/error", "list/ok", "delete/ok", "list/error"} {
		if counts[k] == 0 {
			t.Errorf("uplink_storage_requests_total{%s} = 0", k)
		}
	}
}

func TestInstrumentKeepsFile(t *testing.T) {
	d := storage.Instrument(newDriver(t, t.TempDir()), prometheus.NewRegistry())
	if _, err := d.Put(t.Context(), "k", strings.NewReader("data"), 4, storage.Condition{}); err != nil {
		t.Fatal(err)
	}
	obj, err := d.Open(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	f, ok := obj.(interface{ File() *os.File })
	if !ok {
		t.Fatalf("instrumented Open returned %T without File()", obj)
	}
	b, err := io.ReadAll(f.File())
	if err != nil || string(b) != "data" {
		t.Fatalf("File() read %q, %v", b, err)
	}
}

func TestNewCreatesRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	d := newDriver(t, dir)
	if _, err := d.Put(t.Context(), "x/y", strings.NewReader("1"), 1, storage.Condition{}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "x", "y")); err != nil || string(b) != "1" {
		t.Fatalf("file on disk: %q, %v", b, err)
	}
}

// TestSymlinkEscape plants links to outside the root: os.Root must refuse
// to follow them, for reads and for writes through a linked directory.
func TestSymlinkEscape(t *testing.T) {
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d := newDriver(t, dir)
	ctx := t.Context()
	// TempDir makes siblings, so "rel" resolves to the secret as well.
	for name, target := range map[string]string{"abs": secret, "rel": "../" + filepath.Base(outside) + "/secret", "dirlink": outside} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{"abs", "rel", "dirlink/secret"} {
		if obj, err := d.Open(ctx, key); err == nil {
			b, _ := io.ReadAll(obj)
			obj.Close()
			t.Fatalf("Open(%q) followed a symlink outside the root: read %q", key, b)
		}
		if _, err := d.Stat(ctx, key); err == nil {
			t.Fatalf("Stat(%q) followed a symlink outside the root", key)
		}
	}
	if _, err := d.Put(ctx, "dirlink/new", strings.NewReader("x"), 1, storage.Condition{}); err == nil {
		t.Fatal("Put through a symlinked directory succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Put wrote outside the root: %v", err)
	}
	if err := d.Delete(ctx, "dirlink/secret"); err != nil {
		t.Logf("Delete through symlinked dir: %v", err)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "secret" {
		t.Fatalf("file outside the root touched: %q, %v", b, err)
	}
	// Listing does not follow links either.
	infos, err := d.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 0 {
		t.Fatalf("List shows links: %+v", infos)
	}
}

// TestCASAcrossDrivers increments one counter through several Drivers on
// the same directory, as separate processes would: their only common
// ground is the flock on the lock files.
func TestCASAcrossDrivers(t *testing.T) {
	dir := t.TempDir()
	const drivers, workers, each = 4, 4, 10
	d0 := newDriver(t, dir)
	if _, err := d0.Put(t.Context(), "counter", strings.NewReader("0"), 1, storage.Condition{IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range drivers {
		d := newDriver(t, dir)
		wg.Go(func() { increments(t, d, workers, each) })
	}
	wg.Wait()
	b, err := os.ReadFile(filepath.Join(dir, "counter"))
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.Itoa(drivers * workers * each); string(b) != want {
		t.Fatalf("counter = %s, want %s", b, want)
	}
}

// TestCASAcrossProcesses increments one counter from several processes
// (this test binary, re-executed) sharing the directory.
func TestCASAcrossProcesses(t *testing.T) {
	const procs, workers, each = 3, 2, 15
	if dir := os.Getenv("UPLINK_FS_CAS_DIR"); dir != "" {
		increments(t, newDriver(t, dir), workers, each)
		return
	}
	dir := t.TempDir()
	d := newDriver(t, dir)
	if _, err := d.Put(t.Context(), "counter", strings.NewReader("0"), 1, storage.Condition{IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range procs {
		wg.Go(func() {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCASAcrossProcesses$", "-test.count=1")
			cmd.Env = append(os.Environ(), "UPLINK_FS_CAS_DIR="+dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("child: %v\n%s", err, out)
			}
		})
	}
	increments(t, d, workers, each)
	wg.Wait()
	if b, _ := os.ReadFile(filepath.Join(dir, "counter")); string(b) != strconv.Itoa((procs+1)*workers*each) {
		t.Fatalf("counter = %s, want %d", b, (procs+1)*workers*each)
	}
}

// increments adds workers*each to "counter" with read/compare-and-swap.
func increments(t *testing.T, d storage.Driver, workers, each int) {
	ctx := t.Context()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for n := 0; n < each; {
				obj, err := d.Open(ctx, "counter")
				if err != nil {
					t.Error(err)
					return
				}
				b, err := io.ReadAll(obj)
				obj.Close()
				if err != nil {
					t.Error(err)
					return
				}
				v, _ := strconv.Atoi(string(b))
				next := strconv.Itoa(v + 1)
				_, err = d.Put(ctx, "counter", strings.NewReader(next), -1, storage.Condition{IfMatch: obj.Info().ETag})
				switch {
				case err == nil:
					n++
				case !errors.Is(err, storage.ErrConditionFailed):
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestDeleteRacesPut deletes the last object of a directory (pruning it)
// while other goroutines write into that directory: no Put may fail.
func TestDeleteRacesPut(t *testing.T) {
	d := newDriver(t, t.TempDir())
	ctx := t.Context()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				key := "p/q/r/" + strconv.Itoa(w) + "-" + strconv.Itoa(i%3)
				if _, err := d.Put(ctx, key, strings.NewReader("x"), 1, storage.Condition{}); err != nil {
					t.Errorf("Put: %v", err)
					return
				}
				if err := d.Delete(ctx, key); err != nil {
					t.Errorf("Delete: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	infos, err := d.List(ctx, "")
	if err != nil || len(infos) != 0 {
		t.Fatalf("List = %+v, %v", infos, err)
	}
}

// TestHiddenDirsIgnored checks that temp and lock files, and dot files
// other tools leave, never show up as objects.
func TestHiddenDirsIgnored(t *testing.T) {
	dir := t.TempDir()
	d := newDriver(t, dir)
	ctx := t.Context()
	if _, err := d.Put(ctx, "a/b", strings.NewReader("x"), 1, storage.Condition{IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{".tmp/leftover", "a/.hidden", ".DS_Store"} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	infos, err := d.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].Key != "a/b" {
		t.Fatalf("List = %+v", infos)
	}
	entries, err := os.ReadDir(filepath.Join(dir, ".locks"))
	if err != nil || len(entries) == 0 {
		t.Fatalf("no lock files: %v", err)
	}
}
