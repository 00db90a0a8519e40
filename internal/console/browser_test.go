package console_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/uplinkhq/uplink/internal/api"
)

// The console in Debian's chromium against a running uplink (no instance
// backend, every step slowed to stepDelay): the rollback flow of issue 11
// and its refusals. Screenshots of every page go to $UPLINK_SCREENSHOTS
// (see testenv.Screenshot).

const desktopW, desktopH = 1280, 900

// TestBrowserRollbackAndBack: sign in, installation, commit history, pin
// the older commit and follow the operation live; then the channel picker
// puts the installation back on main.
func TestBrowserRollbackAndBack(t *testing.T) {
	t.Parallel()
	u := startUplink(t)
	p := u.browser(t, desktopW, desktopH)

	p.open("/")
	if path := p.path(); !strings.HasPrefix(path, "/ui/login") {
		t.Fatalf("signed out, / leads to %s, want the sign-in page", path)
	}
	if status := p.signIn(); status != http.StatusOK || p.path() != "/ui/" {
		t.Fatalf("signing in lands on %s (%d), want /ui/", p.path(), status)
	}
	row := `table#installations tr[data-installation="` + installation + `"]`
	p.wait(row, 5*time.Second)
	if got := p.text(row + " td.channel"); got != "tracking main" {
		t.Errorf("installations list: channel %q, want %q", got, "tracking main")
	}
	p.screenshot("installations")

	p.click(row + " a.installation")
	p.expectInstallation("tracking main", u.newer)
	p.screenshot("installation-tracking")

	p.click("a#commit-history")
	if path := p.path(); path != "/ui/installations/"+installation+"/commits" {
		t.Fatalf("commit history link leads to %s", path)
	}
	p.expectHistory(u.newer, u.older)
	p.screenshot("commit-history")

	p.click(`table#commits tr[data-commit="` + u.older + `"] a.change`)
	if path := p.path(); path != "/ui/installations/"+installation+"/confirm?commit="+u.older {
		t.Fatalf("Change on the older commit leads to %s", path)
	}
	p.screenshot("confirm-pin")
	op := p.confirmAndWatch("pin", "pinned to "+short(u.older))
	if op.To.Commit != u.older || op.From == nil || op.From.Branch != "main" {
		t.Errorf("the pin operation goes %+v -> %+v, want main -> %s", op.From, op.To, u.older)
	}

	p.click("a#back-to-installation")
	p.expectInstallation("pinned to "+short(u.older), u.older)
	if ch := u.channel(t); ch.Commit != u.older || ch.Branch != "" {
		t.Errorf("API after the pin: channel %+v, want commit %s", ch, u.older)
	}
	p.screenshot("installation-pinned")

	p.click("a#change-channel")
	if path := p.path(); path != "/ui/installations/"+installation+"/channel" {
		t.Fatalf("the channel link leads to %s", path)
	}
	p.wait(`table#branches tr[data-branch="main"]`, 5*time.Second)
	p.screenshot("channel-picker")
	p.click(`table#branches tr[data-branch="main"] a.change`)
	if path := p.path(); path != "/ui/installations/"+installation+"/confirm?branch=main" {
		t.Fatalf("Change on main leads to %s", path)
	}
	p.screenshot("confirm-track")
	op = p.confirmAndWatch("track", "tracking main")
	if op.To.Branch != "main" || op.From == nil || op.From.Commit != u.older {
		t.Errorf("the track operation goes %+v -> %+v, want %s -> main", op.From, op.To, u.older)
	}

	p.click("a#back-to-installation")
	p.expectInstallation("tracking main", u.newer)
	if ch := u.channel(t); ch.Branch != "main" || ch.Commit != "" {
		t.Errorf("API after tracking again: channel %+v, want branch main", ch)
	}
	p.screenshot("installation-tracking-again")
}

// expectInstallation checks the installation page: #channel reads channel
// (the text besides a#change-channel) and #commit shows commit's short SHA.
func (p *page) expectInstallation(channel, commit string) {
	p.t.Helper()
	if path := p.path(); path != "/ui/installations/"+installation {
		p.t.Fatalf("on %s, want the installation page", path)
	}
	p.wait("#channel", 5*time.Second)
	got := eval[string](p, `(() => {
		const c = document.querySelector('#channel').cloneNode(true);
		c.querySelectorAll('#change-channel').forEach(e => e.remove());
		return c.textContent.replace(/\s+/g, ' ').trim();
	})()`)
	if got != channel {
		p.t.Errorf("installation page: #channel %q, want %q", got, channel)
	}
	if n := eval[int](p, `document.querySelectorAll('a#change-channel').length`); n != 1 {
		p.t.Errorf("installation page: %d a#change-channel, want 1", n)
	}
	if got := p.text("#commit"); !strings.Contains(got, short(commit)) {
		p.t.Errorf("installation page: #commit %q does not show %s", got, short(commit))
	}
}

// expectHistory checks the commit history lists exactly commits, newest
// first, the first one current and without a Change link, the others with.
func (p *page) expectHistory(commits ...string) {
	p.t.Helper()
	p.wait("table#commits", 5*time.Second)
	rows := eval[[]string](p, `Array.from(document.querySelectorAll('table#commits tr[data-commit]')).map(r => r.dataset.commit)`)
	if strings.Join(rows, ",") != strings.Join(commits, ",") {
		p.t.Fatalf("commit history rows %v, want %v (newest first)", rows, commits)
	}
	for i, c := range commits {
		sel := `table#commits tr[data-commit="` + c + `"]`
		current := eval[bool](p, `document.querySelector('`+sel+`').classList.contains('current')`)
		links := eval[int](p, `document.querySelectorAll('`+sel+` a.change').length`)
		if current != (i == 0) || (links == 0) != (i == 0) {
			p.t.Errorf("commit %s: current=%v with %d Change links; want only the head current, and a Change link on the others", short(c), current, links)
		}
	}
}

// confirmAndWatch presses Change on the confirm page and follows the
// operation page it lands on until the result shows. #from-to must end
// in "→ <to>". The page must show
// the operation running (a running step or #op-state running) and then
// succeeded, in the same document: a marker set on window when it loaded
// must still be there at the end.
func (p *page) confirmAndWatch(name, to string) *api.Operation {
	p.t.Helper()
	if n := eval[int](p, `document.querySelectorAll('form#confirm input[type=hidden][name=csrf]').length`); n != 1 {
		p.t.Errorf("the confirm form has %d hidden csrf inputs, want 1", n)
	}
	if status := p.click("form#confirm button#confirm-change"); status != http.StatusOK {
		p.t.Fatalf("Change answered %d on %s", status, p.location())
	}
	id, ok := strings.CutPrefix(p.path(), "/ui/operations/")
	if !ok || id == "" || strings.Contains(id, "/") {
		p.t.Fatalf("Change leads to %s, want /ui/operations/<id>", p.path())
	}
	if fromTo := p.text("#from-to"); !strings.Contains(fromTo, "→ "+to) {
		p.t.Errorf("#from-to %q, want it to go → %s", fromTo, to)
	}
	// Record every state the page shows from now on.
	eval[bool](p, `(() => {
		window.uplinkMarker = 'not reloaded';
		window.uplinkSeen = [];
		const record = () => {
			const op = document.querySelector('#op-state');
			const steps = Array.from(document.querySelectorAll('ol#steps li[data-step]')).map(li => li.dataset.state);
			window.uplinkSeen.push({op: op ? op.dataset.state : '', running: steps.filter(s => s === 'running').length});
		};
		record();
		new MutationObserver(record).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
		return true;
	})()`)
	p.screenshot("operation-" + name + "-running")
	p.wait("#result", waitLong)
	if m := eval[string](p, `window.uplinkMarker || ''`); m != "not reloaded" {
		p.t.Fatalf("the operation page reloaded while the operation ran (marker %q)", m)
	}
	type seen struct {
		Op      string `json:"op"`
		Running int    `json:"running"`
	}
	var states []seen
	if err := json.Unmarshal(eval[[]byte](p, `window.uplinkSeen`), &states); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("operation page states (#op-state, running steps), live: %v", states)
	running, succeeded := -1, -1
	for i, s := range states {
		if running < 0 && (s.Op == "running" || s.Running > 0) {
			running = i
		}
		if succeeded < 0 && s.Op == "succeeded" {
			succeeded = i
		}
	}
	if running < 0 || succeeded < 0 || running > succeeded || states[0].Op == "succeeded" {
		p.t.Errorf("the page showed %+v; want the operation running (a running step or #op-state running), then succeeded, live", states)
	}
	if !strings.Contains(p.attr("#result", "class"), "succeeded") {
		p.t.Errorf("#result class %q, want succeeded", p.attr("#result", "class"))
	}
	if st := p.attr("#op-state", "data-state"); st != "succeeded" {
		p.t.Errorf("#op-state data-state %q at the end, want succeeded", st)
	}
	if left := eval[int](p, `document.querySelectorAll('ol#steps li[data-step]:is([data-state=pending],[data-state=running],[data-state=failed])').length`); left != 0 {
		p.t.Errorf("%d steps not finished after success", left)
	}
	if done, total, ok := strings.Cut(p.text("#progress"), "/"); !ok || done != total {
		p.t.Errorf("#progress %q after success", p.text("#progress"))
	}
	p.screenshot("operation-" + name + "-done")
	op := p.u.waitOp(p.t, id)
	if op.State != api.Succeeded {
		p.t.Fatalf("operation %s: %s %s", id, op.State, op.Error)
	}
	return op
}

// TestBrowserChangeWhileOneRuns: a second change while an operation runs
// is refused with the 409 message, which links to the running operation.
func TestBrowserChangeWhileOneRuns(t *testing.T) {
	t.Parallel()
	u := startUplink(t)
	p := u.browser(t, desktopW, desktopH)
	p.signedIn()

	p.open("/ui/installations/" + installation + "/confirm?commit=" + u.older)
	p.wait("form#confirm button#confirm-change", 5*time.Second)
	p.screenshot("confirm")
	running, err := u.api.SetChannel(context.Background(), installation, api.Channel{Commit: u.newer})
	if err != nil {
		t.Fatalf("starting a change through the API: %v", err)
	}
	if status := p.click("form#confirm button#confirm-change"); status != http.StatusConflict {
		t.Errorf("Change while operation %s runs answered %d, want 409", running.ID, status)
	}
	p.wait("p.error", 5*time.Second)
	if msg := p.text("p.error"); !strings.Contains(msg, "operation "+running.ID+" is running") {
		t.Errorf("409 message %q, want it to say %q", msg, "operation "+running.ID+" is running")
	}
	if href := eval[string](p, `document.querySelector('a.operation-link')?.pathname ?? ''`); href != "/ui/operations/"+running.ID {
		t.Errorf("a.operation-link leads to %q, want /ui/operations/%s", href, running.ID)
	}
	p.screenshot("conflict")

	p.click("a.operation-link")
	if path := p.path(); path != "/ui/operations/"+running.ID {
		t.Fatalf("the 409 link leads to %s", path)
	}
	p.wait("#op-state", 5*time.Second)
	p.screenshot("running-operation")
	if op := u.waitOp(t, running.ID); op.State != api.Succeeded {
		t.Fatalf("the running operation: %s %s", op.State, op.Error)
	}
	if n := u.operationCount(t); n != 2 {
		t.Errorf("%d operations, want 2 (the first and the API's change): the refused change must start none", n)
	}
	if ch := u.channel(t); ch.Commit != u.newer {
		t.Errorf("channel %+v, want the API's pin to %s", ch, short(u.newer))
	}
}

// TestBrowserCSRF: the confirm form posted without its CSRF token, or with
// a wrong one, is refused with 403 and changes nothing.
func TestBrowserCSRF(t *testing.T) {
	t.Parallel()
	u := startUplink(t)
	p := u.browser(t, desktopW, desktopH)
	p.signedIn()
	before := u.operationCount(t)

	for _, tc := range []struct{ name, js string }{
		{"missing", `document.querySelectorAll('form#confirm input[name=csrf]').forEach(e => e.remove())`},
		{"wrong", `document.querySelectorAll('form#confirm input[name=csrf]').forEach(e => e.value = 'forged-' + e.value)`},
	} {
		p.open("/ui/installations/" + installation + "/confirm?commit=" + u.older)
		p.wait("form#confirm button#confirm-change", 5*time.Second)
		if n := eval[int](p, `document.querySelectorAll('form#confirm input[type=hidden][name=csrf]').length`); n != 1 {
			t.Errorf("the confirm form has %d hidden csrf inputs, want 1", n)
		}
		p.screenshot("confirm-" + tc.name)
		eval[bool](p, "("+tc.js+", true)")
		if status := p.click("form#confirm button#confirm-change"); status != http.StatusForbidden {
			t.Errorf("%s CSRF token: Change answered %d, want 403", tc.name, status)
		}
		if msg := p.text("p.error"); !strings.Contains(msg, "invalid or missing CSRF token") {
			t.Errorf("%s CSRF token: message %q", tc.name, msg)
		}
		p.screenshot("csrf-" + tc.name)
	}
	if ch := u.channel(t); ch.Branch != "main" || ch.Commit != "" {
		t.Errorf("after refused posts the channel is %+v, want tracking main", ch)
	}
	if n := u.operationCount(t); n != before {
		t.Errorf("refused posts started operations: %d, was %d", n, before)
	}
}

// TestBrowserSignedOut: with no cookie at all, and after signing out
// (the old cookie replayed too), every page leads to the sign-in page.
func TestBrowserSignedOut(t *testing.T) {
	t.Parallel()
	u := startUplink(t)
	ops, err := u.api.Operations(context.Background(), installation)
	if err != nil || len(ops) == 0 {
		t.Fatalf("operations: %v %v", ops, err)
	}
	in := "/ui/installations/" + installation
	pages := []string{
		"/ui/", in, in + "/commits", in + "/commits?ref=main", in + "/channel", in + "/confirm?commit=" + u.older,
		in + "/confirm?branch=main", "/ui/operations/" + ops[0].ID, "/ui/apps", "/ui/apps/" + testApp,
		"/ui/apps/" + testApp + "/commits?ref=main",
	}
	p := u.browser(t, desktopW, desktopH)

	t.Run("no cookie", func(t *testing.T) {
		p.t = t
		p.expectSignInEverywhere(pages, "")
		expectRedirectToSignIn(t, u, "/ui/operations/"+ops[0].ID+"/events", "")
	})
	t.Run("signed out", func(t *testing.T) {
		p.t = t
		p.signedIn()
		p.open(in)
		if path := p.path(); path != in {
			t.Fatalf("signed in, %s leads to %s", in, path)
		}
		p.screenshot("installation")
		cookie := p.sessionCookie()
		p.click("form#signout button")
		if path := p.path(); !strings.HasPrefix(path, "/ui/login") {
			t.Fatalf("signing out leads to %s, want the sign-in page", path)
		}
		p.screenshot("signed-out")
		p.expectSignInEverywhere(pages, cookie)
	})
	if ch := u.channel(t); ch.Branch != "main" {
		t.Errorf("channel %+v after signed-out posts, want tracking main", ch)
	}
}

// expectSignInEverywhere opens every page in the browser, and asks for it
// with cookie (the session cookie's value, or none) from Go: each leads to
// the sign-in page, remembering the page in next. A post changes nothing.
func (p *page) expectSignInEverywhere(pages []string, cookie string) {
	p.t.Helper()
	for _, path := range pages {
		p.open(path)
		got := p.path()
		if !strings.HasPrefix(got, "/ui/login") {
			p.t.Errorf("signed out, %s shows %s, want the sign-in page", path, got)
			continue
		}
		p.wait("form#login", 5*time.Second)
		p.screenshot("sign-in-for" + strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
				return r
			}
			return '-'
		}, path))
		expectRedirectToSignIn(p.t, p.u, path, cookie)
	}
	form := url.Values{"commit": {p.u.older}, "csrf": {"anything"}}
	req, _ := http.NewRequest(http.MethodPost, p.u.base+"/ui/installations/"+installation+"/channel", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: "uplink_session", Value: cookie})
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if !(resp.StatusCode == http.StatusSeeOther && loc != nil && loc.Path == "/ui/login") && resp.StatusCode != http.StatusForbidden {
		p.t.Errorf("signed out, a POST of the channel form answered %d %q, want 303 to /ui/login or 403", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// expectRedirectToSignIn asks for path from Go, with the session cookie
// value unless it is empty, and wants 303 to /ui/login?next=<path>.
func expectRedirectToSignIn(t *testing.T, u *uplink, path, cookie string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u.base+path, nil)
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: "uplink_session", Value: cookie})
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || err != nil || loc.Path != "/ui/login" {
		t.Errorf("signed out, GET %s answered %d %q, want 303 to /ui/login?next=...", path, resp.StatusCode, resp.Header.Get("Location"))
		return
	}
	bare, _, _ := strings.Cut(path, "?")
	if next := loc.Query().Get("next"); next != path && next != bare {
		t.Errorf("signed out, GET %s leads to sign-in with next=%q", path, next)
	}
}

// signedIn signs in from the sign-in page.
func (p *page) signedIn() {
	p.t.Helper()
	p.open("/ui/login")
	if status := p.signIn(); status != http.StatusOK || p.path() != "/ui/" {
		p.t.Fatalf("signing in lands on %s (%d), want /ui/", p.path(), status)
	}
	p.screenshot("installations")
}

// sessionCookie is the value of the browser's session cookie.
func (p *page) sessionCookie() string {
	p.t.Helper()
	res := run(p, 5*time.Second, "reading cookies", func(ctx context.Context, t *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, t, network.GetCookies, network.GetCookiesParams{URLs: []string{p.u.base + "/ui/"}})
	})
	for _, c := range res.Cookies {
		if c.Name == "uplink_session" {
			return c.Value
		}
	}
	p.t.Fatal("signed in, the browser holds no uplink_session cookie")
	return ""
}

// TestBrowserPhoneWidth: at a phone's 390 px the installation page and the
// operation page (running, then done) fit the width: only tables scroll.
func TestBrowserPhoneWidth(t *testing.T) {
	t.Parallel()
	u := startUplink(t)
	p := u.browser(t, 390, 844)
	p.signedIn()

	p.open("/ui/installations/" + installation)
	p.wait("#channel", 5*time.Second)
	p.expectNoOverflow("installation")
	p.screenshot("installation")

	op, err := u.api.SetChannel(context.Background(), installation, api.Channel{Commit: u.older})
	if err != nil {
		t.Fatalf("starting a change: %v", err)
	}
	p.open("/ui/operations/" + op.ID)
	p.wait("#op-state", 5*time.Second)
	p.expectNoOverflow("running operation")
	p.screenshot("operation-running")
	p.wait("#result", waitLong)
	p.expectNoOverflow("finished operation")
	p.screenshot("operation-done")
}

func (p *page) expectNoOverflow(what string) {
	p.t.Helper()
	var m struct{ Scroll, Inner int }
	if err := json.Unmarshal(eval[[]byte](p, `({scroll: document.body.scrollWidth, inner: window.innerWidth})`), &m); err != nil {
		p.t.Fatal(err)
	}
	if m.Scroll > m.Inner {
		p.t.Errorf("%s at %d px: the body is %d px wide (horizontal overflow)", what, m.Inner, m.Scroll)
	}
}
