package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/uplinkhq/uplink/internal/testenv"
)

const width, height = 1280, 800

// browser is a signed-in chromium tab and where its shots go.
type browser struct {
	ctx context.Context
	ui  string // http://<admin>/ui
	out string
}

// photograph signs in and saves each page: first the rollback of the
// pinned installation done through the console (commit history, confirm,
// the operation while it runs and once done), then the pages as they
// stand after it.
func photograph(ctx context.Context, ui string, s *site, out string) error {
	profile, err := os.MkdirTemp("", "uplink-screenshots-chromium-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(profile)
	opts, err := testenv.BrowserOptions(profile, width, height)
	if err != nil {
		return err
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	tab, cancel := chromedp.NewContext(alloc)
	defer cancel()
	b := &browser{ctx: tab, ui: ui, out: out}
	// The first Run starts the browser, with no timeout of its own.
	if err := chromedp.Do(tab, chromedp.EmulateViewport(width, height)); err != nil {
		return fmt.Errorf("starting chromium: %w", err)
	}
	if err := b.do("sign in", chromedp.Navigate(ui+"/login"),
		chromedp.SendKeys(chromedp.CSS(`input[name=token]`), token),
		chromedp.Click(chromedp.CSS(`form#login button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`table#installations`))); err != nil {
		return err
	}
	if err := b.rollback(s); err != nil {
		return err
	}
	return b.pages(s)
}

// rollback pins s.pinned to main's second commit through its commit
// history, as an operator would, photographing the operation page while
// its steps run and when it is done.
func (b *browser) rollback(s *site) error {
	older := s.commits[1]
	if err := b.open("/installations/"+s.pinned+"/commits", `tr[data-commit="`+older+`"] a.change`); err != nil {
		return err
	}
	if err := b.do("pick the older commit", chromedp.Click(chromedp.CSS(`tr[data-commit="`+older+`"] a.change`)),
		chromedp.WaitVisible(chromedp.CSS(`form#confirm`))); err != nil {
		return err
	}
	if err := b.shot("confirm"); err != nil {
		return err
	}
	// Midway: some steps recorded, the others still to come.
	midway := `document.querySelectorAll('ol#steps li[data-state="skipped"], ol#steps li[data-state="done"]').length >= 3`
	if err := b.do("confirm the change", chromedp.Click(chromedp.CSS(`button#confirm-change`)),
		chromedp.WaitVisible(chromedp.CSS(`#op-state`)), chromedp.Poll[chromedp.Void](midway)); err != nil {
		return err
	}
	if err := b.shot("operation-running"); err != nil {
		return err
	}
	if err := b.do("the operation ends", chromedp.WaitVisible(chromedp.CSS(`#result`))); err != nil {
		return err
	}
	return b.shot("operation-done")
}

// pages photographs the console's other pages: path → the element that
// says the page is there.
func (b *browser) pages(s *site) error {
	for _, p := range []struct{ name, path, ready string }{
		{"installations", "/", `table#installations`},
		{"installation", "/installations/" + s.pinned, `table#instances`},
		{"commits", "/installations/" + s.tracking + "/commits", `table#commits`},
		{"channel", "/installations/" + s.tracking + "/channel", `table#branches`},
		{"operation-failed", "/operations/" + s.failed, `#result`},
		{"apps", "/apps", `table#apps`},
		{"app", "/apps/" + app, `table#branches`},
		{"app-commits", "/apps/" + app + "/commits?ref=main", `table#commits`},
	} {
		if err := b.open(p.path, p.ready); err != nil {
			return err
		}
		if err := b.shot(p.name); err != nil {
			return err
		}
	}
	// A phone's width: tables scroll inside their container.
	if err := b.do("a phone's width", chromedp.EmulateViewport(390, 844)); err != nil {
		return err
	}
	if err := b.open("/installations/"+s.pinned, `table#instances`); err != nil {
		return err
	}
	return b.shot("installation-phone")
}

// open loads a console page and waits for ready, a CSS selector.
func (b *browser) open(path, ready string) error {
	return b.do("open "+path, chromedp.Navigate(b.ui+path), chromedp.WaitVisible(chromedp.CSS(ready)))
}

// do runs steps within a minute, naming what failed and where.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		url, _ := chromedp.Run(b.ctx, chromedp.Location())
		return fmt.Errorf("%s (at %s): %w", what, url, err)
	}
	return nil
}

// shot saves the viewport (not the full page: the PNGs stay small) as
// <out>/<name>.png.
func (b *browser) shot(name string) error {
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		return fmt.Errorf("screenshot %s: %w", name, err)
	}
	path := filepath.Join(b.out, name+".png")
	log.Printf("%s (%d KiB)", path, len(png)>>10)
	return os.WriteFile(path, png, 0o644)
}
