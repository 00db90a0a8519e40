package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Browser starts Debian's chromium headless at width x height and returns a chromedp context
// that ends at t's cleanup. A missing chromium fails the test (t.Fatal, naming
// scripts/install-test-deps.sh), never skips.
func Browser(t testing.TB, width, height int) context.Context {
	t.Helper()
	opts, err := BrowserOptions(t.TempDir(), width, height)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	logf := cleanupSafeLogf(t)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithErrorf(logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Run starts the browser: it must be given the long-lived
	// context, not a caller's timeout, which would end the browser with it.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(width), int64(height))); err != nil {
		t.Fatalf("testenv: starting chromium: %v", err)
	}
	// Uncaught page exceptions (a broken script) go to the test log.
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			if d := ev.ExceptionDetails; d != nil {
				msg := d.Text
				if d.Exception != nil {
					msg += " " + d.Exception.Description
				}
				logf("browser: page exception at %s:%d: %s", d.URL, d.LineNumber+1, msg)
			}
		}
	}()
	return ctx
}

// BrowserOptions are the options Browser starts chromium with, for
// programs that are not tests (make screenshots).
func BrowserOptions(userDataDir string, width, height int) ([]chromedp.ExecAllocatorOption, error) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		return nil, fmt.Errorf("chromium not found in PATH (%v); run scripts/install-test-deps.sh as root (make test does)", err)
	}
	return append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(userDataDir),
		chromedp.WindowSize(width, height),
		// Containers run the tests as root, where chromium's sandbox cannot start.
		chromedp.NoSandbox,
		chromedp.Flag("headless", "new"),
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
	), nil
}

// cleanupSafeLogf logs to t until its cleanup starts: chromedp may report
// errors from its own goroutines after the test ended, when t.Logf panics.
func cleanupSafeLogf(t testing.TB) func(string, ...any) {
	var mu sync.Mutex
	done := false
	t.Cleanup(func() {
		mu.Lock()
		done = true
		mu.Unlock()
	})
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			t.Logf(format, args...)
		}
	}
}

// Screenshot saves a full-page PNG of the page as <dir>/<name>.png and logs the path; dir is
// $UPLINK_SCREENSHOTS/<test name> when set, else <os.TempDir()>/uplink-screenshots/<test name>.
func Screenshot(t testing.TB, ctx context.Context, name string) {
	t.Helper()
	root := os.Getenv("UPLINK_SCREENSHOTS")
	if root == "" {
		root = filepath.Join(os.TempDir(), "uplink-screenshots")
	}
	dir := filepath.Join(root, filepath.FromSlash(t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("testenv: screenshot dir: %v", err)
	}
	// Quality 100 makes chromedp capture PNG rather than JPEG.
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("testenv: screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("testenv: screenshot %s: %v", name, err)
	}
	t.Logf("screenshot: %s", path)
}
