package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/uplinkhq/uplink/internal/testenv"
)

// TestConsoleIncusRollback is the seed's rollback flow in the browser on a
// real Incus daemon: an installation of one container tracks main; the
// operator signs in, opens its commit history, picks the older commit,
// presses Change and follows the operation page, live, until it succeeds
// with the log showing apk fetching the pinned commit's index. The
// installation page then says "pinned to" and lists the instance with the
// older commit and the version its apk database holds.
func TestConsoleIncusRollback(t *testing.T) {
	s := newIncusSite(t)
	a, b := commitOf("A"), commitOf("B")
	s.publish(t, a, "main", hello(t, s.key, "1.0-r0", "A"))
	s.publish(t, b, "main", hello(t, s.key, "2.0-r0", "B"))
	v := putInstallation(t, s.node, "web", s.spec())
	mustSucceed(t, s.node, v.LastOperation)
	first, _ := s.only(t)

	ui := "http://" + s.srv.AdminAddr() + "/ui"
	br := testenv.Browser(t, 1280, 900)
	do := func(what string, within time.Duration, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		inBrowser(t, br, what, within, chromedp.Steps(steps...))
	}
	text := func(sel string) string {
		t.Helper()
		return inBrowser(t, br, "reading "+sel, 10*time.Second, chromedp.Text(chromedp.CSS(sel)))
	}

	do("sign in", 30*time.Second,
		chromedp.Navigate(ui+"/login"),
		chromedp.SendKeys(chromedp.CSS(`input[name=token]`), testToken),
		chromedp.Click(chromedp.CSS(`form#login button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-installation="web"]`)))
	testenv.Screenshot(t, br, "installations")

	do("open the installation", 30*time.Second,
		chromedp.Click(chromedp.CSS(`tr[data-installation="web"] a.installation`)),
		chromedp.WaitVisible(chromedp.CSS(`#channel`)))
	if channel := text(`#channel`); !strings.Contains(channel, "tracking main") {
		t.Fatalf("#channel before the change: %q, want tracking main", channel)
	}
	testenv.Screenshot(t, br, "installation")

	do("open the commit history", 30*time.Second,
		chromedp.Click(chromedp.CSS(`a#commit-history`)),
		chromedp.WaitVisible(chromedp.CSS(`table#commits tr[data-commit="`+a+`"]`)))
	testenv.Screenshot(t, br, "commits")

	do("pick the older commit", 30*time.Second,
		chromedp.Click(chromedp.CSS(`tr[data-commit="`+a+`"] a.change`)),
		chromedp.WaitVisible(chromedp.CSS(`form#confirm`)))
	testenv.Screenshot(t, br, "confirm")

	// A mark on the page's window that a reload would lose: the operation
	// page, loaded before the operation ended, must reach its result live,
	// through its event stream.
	do("confirm the change", 30*time.Second,
		chromedp.Click(chromedp.CSS(`button#confirm-change`)),
		chromedp.WaitVisible(chromedp.CSS(`#op-state`)))
	if !inBrowser(t, br, "marking the page", 10*time.Second,
		chromedp.Evaluate[bool](`window.uplinkNoReload = true; document.getElementById("result") === null`)) {
		t.Fatal("the operation page showed a result as it loaded; the change must take longer than that")
	}
	testenv.Screenshot(t, br, "operation-running")

	do("follow the operation to its end", 5*time.Minute, chromedp.WaitVisible(chromedp.CSS(`#result`)))
	testenv.Screenshot(t, br, "operation-done")
	if !inBrowser(t, br, "reading the mark", 10*time.Second, chromedp.Evaluate[bool](`window.uplinkNoReload === true`)) {
		t.Fatal("the operation page was reloaded; it must update live")
	}
	state := inBrowser(t, br, "reading #op-state", 10*time.Second, chromedp.AttributeValue(chromedp.CSS(`#op-state`), "data-state"))
	log := text(`pre#log`)
	if state.Value != "succeeded" {
		t.Fatalf("operation page: state %q, log:\n%s", state.Value, log)
	}
	pinned, _ := s.only(t)
	if pinned == first {
		t.Fatalf("pinned: %s was not replaced", first)
	}
	for _, want := range []string{s.fetchLine(a), pinned + ": hello 1.0-r0 installed"} {
		if !strings.Contains(log, want) {
			t.Fatalf("pre#log lacks %q:\n%s", want, log)
		}
	}

	do("back to the installation", 30*time.Second,
		chromedp.Click(chromedp.CSS(`a#back-to-installation`)),
		chromedp.WaitVisible(chromedp.CSS(`table#instances`)))
	testenv.Screenshot(t, br, "installation-pinned")
	if channel := text(`#channel`); !strings.Contains(channel, "pinned to "+a[:7]) {
		t.Fatalf("#channel after the change: %q, want pinned to %s", channel, a[:7])
	}
	// What the page lists is what the container holds.
	s.runs(t, pinned, a, "1.0-r0", "A")
	rows := text(`table#instances`)
	for _, want := range []string{pinned, a[:7], s.version(t, pinned)} {
		if !strings.Contains(rows, want) {
			t.Fatalf("table#instances lacks %q: %q", want, rows)
		}
	}
	if strings.Contains(rows, first) {
		t.Fatalf("table#instances still lists the replaced %s: %q", first, rows)
	}
}

// inBrowser runs a within a timeout; on failure it saves a screenshot of
// where the browser is and fails the test.
func inBrowser[T any](t *testing.T, br context.Context, what string, within time.Duration, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(br, within)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		url, _ := chromedp.Run(br, chromedp.Location())
		testenv.Screenshot(t, br, "failed")
		t.Fatalf("%s (at %s): %v", what, url, err)
	}
	return v
}
