package console_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/storage"
)

func TestChannelText(t *testing.T) {
	s, older, _ := seeded(t, 0)
	row := func() string {
		_, body := s.get("/ui/")
		i := strings.Index(body, `data-installation="web"`)
		if i < 0 {
			t.Fatalf("no row for web\n%s", body)
		}
		return body[i:]
	}
	if r := row(); !strings.Contains(r, `<td class="channel">tracking main</td>`) || !strings.Contains(r, `<td class="instances">0/1</td>`) {
		t.Fatalf("row %s", r)
	}
	op, err := s.svc.SetChannel(context.Background(), "web", instance.Channel{Commit: older})
	if err != nil {
		t.Fatal(err)
	}
	s.wait(op.ID)
	if r := row(); !strings.Contains(r, `<td class="channel">pinned to `+older[:7]+`</td>`) {
		t.Fatalf("row %s", r)
	}
	_, body := s.get("/ui/installations/web")
	if !strings.Contains(body, `<span id="channel">pinned to `+older[:7]+`</span>`) {
		t.Fatalf("installation page %s", body)
	}
	if _, err := s.refs.Publish(context.Background(), helloApp, refPublishTag(older, "v1")); err != nil {
		t.Fatal(err)
	}
	op, err = s.svc.SetChannel(context.Background(), "web", instance.Channel{Tag: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	s.wait(op.ID)
	if r := row(); !strings.Contains(r, `<td class="channel">tagged v1</td>`) {
		t.Fatalf("row %s", r)
	}
}

// The rollback flow without a browser: history, confirm, change, the
// operation page, and back on the installation page.
func TestChangeFromHistory(t *testing.T) {
	s, older, newer := seeded(t, 0)

	res, body := s.get("/ui/installations/web")
	expect(t, res, body, http.StatusOK, `id="commit-history"`, `id="change-channel"`, `<code id="repository">http://uplink.test:4080/distribution/main/acme/hello</code>`,
		`id="instances"`, `id="operations"`, `id="history"`, newer[:7], "commit two")
	res, body = s.get("/ui/installations/web/commits")
	expect(t, res, body, http.StatusOK, `data-commit="`+older+`"`, `<tr id="commit-`+newer+`" data-commit="`+newer+`" class="current">`,
		`/ui/installations/web/confirm?commit=`+older, `<td class="running-here">web</td>`)
	if strings.Contains(body, `confirm?commit=`+newer) {
		t.Fatal("the current commit has a Change link")
	}
	if strings.Index(body, newer) > strings.Index(body, older) {
		t.Fatal("history is not newest first")
	}
	res, body = s.get("/ui/installations/web/confirm?commit=" + older)
	expect(t, res, body, http.StatusOK, `id="confirm"`, `id="confirm-change"`, "tracking main", "pinned to "+older[:7])

	res, body = s.post("/ui/installations/web/channel", url.Values{"commit": {older}, "csrf": {s.csrf()}})
	loc := res.Header.Get("Location")
	if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/operations/web.") {
		t.Fatalf("change: %d to %q\n%s", res.StatusCode, loc, body)
	}
	id := strings.TrimPrefix(loc, "/ui/operations/")
	s.wait(id)
	res, body = s.get(loc)
	expect(t, res, body, http.StatusOK, `id="op-state"`, `data-state="succeeded"`, `id="result" class="succeeded"`,
		`id="back-to-installation" href="/ui/installations/web"`, `id="steps"`, `data-step="`, `id="log"`, `id="progress"`)
	res, body = s.get("/ui/installations/web")
	expect(t, res, body, http.StatusOK, `<span id="channel">pinned to `+older[:7]+`</span>`, `href="/ui/operations/`+id+`"`)
}

func TestEventsStream(t *testing.T) {
	s := newSite(t, 0)
	s.publish("one", "main")
	s.install()
	s.signIn()
	res, err := s.client.Get(s.url + "/ui/operations/web.1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" || !strings.Contains(string(b), "event: operation\ndata: {") {
		t.Fatalf("events: %d %q %s", res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	if res, _ := s.do(s.newClient(), http.MethodGet, "/ui/operations/web.1/events", nil); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("events signed out: %d", res.StatusCode)
	}
}

func TestCSRFRefused(t *testing.T) {
	s, older, _ := seeded(t, 0)
	before := len(ops(t, s))
	for _, csrf := range []string{"", "forged"} {
		form := url.Values{"commit": {older}}
		if csrf != "" {
			form.Set("csrf", csrf)
		}
		res, body := s.post("/ui/installations/web/channel", form)
		expect(t, res, body, http.StatusForbidden, `<p class="error">invalid or missing CSRF token`)
	}
	if after := len(ops(t, s)); after != before {
		t.Fatalf("a forged form changed the channel: %d operations, was %d", after, before)
	}
}

func ops(t *testing.T, s *site) []string {
	list, err := s.svc.Operations(context.Background(), "web")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, op := range list {
		ids = append(ids, op.ID)
	}
	return ids
}

func TestBusyShowsRunningOperation(t *testing.T) {
	s, older, _ := seeded(t, 300*time.Millisecond)
	csrf := s.csrf()
	res, _ := s.post("/ui/installations/web/channel", url.Values{"commit": {older}, "csrf": {csrf}})
	running := strings.TrimPrefix(res.Header.Get("Location"), "/ui/operations/")
	res, body := s.get("/ui/installations/web/confirm?branch=main")
	expect(t, res, body, http.StatusOK, `<p class="notice">Operation <a href="/ui/operations/`+running+`">`, `id="confirm-change"`)
	res, body = s.post("/ui/installations/web/channel", url.Values{"branch": {"main"}, "csrf": {csrf}})
	expect(t, res, body, http.StatusConflict, "operation "+running+" is running",
		`<a class="operation-link" href="/ui/operations/`+running+`"`)
	res, body = s.get("/ui/operations/" + running)
	expect(t, res, body, http.StatusOK, `data-events="/ui/operations/`+running+`/events"`)
	if strings.Contains(body, `id="result"`) {
		t.Fatal("a running operation shows a result")
	}
	s.wait(running)
}

func TestUnknownTargets(t *testing.T) {
	s := newSite(t, 0)
	s.publish("one", "main")
	s.install()
	s.signIn()
	for q, want := range map[string]string{
		"commit=" + commitOf("never"): "unknown commit",
		"commit=abcdef0":              "unknown commit abcdef0",
		"commit=xyz":                  "unknown commit xyz",
		"branch=nope":                 "unknown branch nope",
		"tag=v9":                      "unknown tag v9",
	} {
		res, body := s.get("/ui/installations/web/confirm?" + q)
		if res.StatusCode != http.StatusNotFound && res.StatusCode != http.StatusBadRequest && res.StatusCode != http.StatusUnprocessableEntity {
			t.Fatalf("confirm?%s: %d", q, res.StatusCode)
		}
		expect(t, res, body, res.StatusCode, `<p class="error">`+want)
		if strings.Contains(body, `id="confirm"`) {
			t.Fatalf("confirm?%s offers the form", q)
		}
	}
	res, body := s.post("/ui/installations/web/channel", url.Values{"commit": {commitOf("never")}, "csrf": {s.csrf()}})
	expect(t, res, body, http.StatusNotFound, `<p class="error">unknown commit`)
	res, body = s.get("/ui/installations/nope")
	expect(t, res, body, http.StatusNotFound, `<p class="error">installation nope not found`)
}

// brokenStorage fails every read and write.
type brokenStorage struct{ storage.Driver }

var errDown = errors.New("connection refused")

func (brokenStorage) Open(context.Context, string) (storage.Object, error) { return nil, errDown }
func (brokenStorage) Stat(context.Context, string) (storage.Info, error) {
	return storage.Info{}, errDown
}
func (brokenStorage) List(context.Context, string) ([]storage.Info, error) { return nil, errDown }

func TestStorageDown(t *testing.T) {
	s := newSite(t, 0)
	s.signIn()
	s.url = s.serve(brokenStorage{s.drv})
	res, body := s.get("/ui/")
	expect(t, res, body, http.StatusServiceUnavailable, `<p class="error">storage unavailable, try again later`)
}

// A failed change stands out in the list, on the installation page, and
// on its operation page the error and the log come before the steps.
func TestFailedChange(t *testing.T) {
	s := newSite(t, 0)
	s.publish("one", "main")
	bad := s.publishPackage("bad", "main", "other")
	s.signIn()
	s.install() // fails: main's head lacks package hello
	res, body := s.get("/ui/")
	expect(t, res, body, http.StatusOK, `<tr data-installation="web" class="attempt-failed">`, `<span class="badge-failed">failed</span>`)
	res, body = s.get("/ui/installations/web")
	expect(t, res, body, http.StatusOK, `<div id="last-attempt" class="error">`, bad[:7], `href="/ui/operations/web.1"`)
	res, body = s.get("/ui/operations/web.1")
	expect(t, res, body, http.StatusOK, `id="result" class="failed"`, `<pre id="error" class="error">`, `data-state="failed"`)
	if e, l, st := strings.Index(body, `id="error"`), strings.Index(body, `id="log"`), strings.Index(body, `id="steps"`); e > st || l > st {
		t.Fatalf("error at %d and log at %d, not before the steps at %d", e, l, st)
	}
}

func TestPickerAndApps(t *testing.T) {
	s, older, newer := seeded(t, 0)
	if _, err := s.refs.Publish(context.Background(), helloApp, refPublishTag(older, "v1")); err != nil {
		t.Fatal(err)
	}
	res, body := s.get("/ui/installations/web/channel")
	expect(t, res, body, http.StatusOK, `<tr data-branch="main" class="current">`, `<tr data-tag="v1">`,
		`href="/ui/installations/web/confirm?tag=v1"`, `id="pin"`, `name="commit"`)
	if strings.Contains(body, "confirm?branch=main") {
		t.Fatal("the tracked branch has a Change link")
	}
	res, body = s.get("/ui/apps")
	expect(t, res, body, http.StatusOK, `<tr data-app="acme/hello"><td><a href="/ui/apps/acme/hello">`)
	res, body = s.get("/ui/apps/acme/hello")
	expect(t, res, body, http.StatusOK, `<tr data-branch="main">`, `href="/ui/apps/acme/hello/commits?ref=main"`, `<tr data-tag="v1">`)
	res, body = s.get("/ui/apps/acme/hello/commits?ref=main")
	expect(t, res, body, http.StatusOK, `data-commit="`+newer+`"`, `data-commit="`+older+`"`,
		`<code class="repository">http://uplink.test:4080/distribution/`+older+`/acme/hello</code>`, `<td class="archs">x86_64</td>`)
	if strings.Contains(body, `class="change"`) {
		t.Fatal("an app's history offers Change")
	}
	res, body = s.get("/ui/installations/web/commits?ref=nope")
	expect(t, res, body, http.StatusNotFound, `<p class="error">unknown branch or tag nope`, `id="ref"`)
	res, body = s.get("/ui/installations/web/commits?ref=v1")
	expect(t, res, body, http.StatusOK, `data-commit="`+older+`"`, `<option value="v1" selected>`)
	if strings.Contains(body, `data-commit="`+newer+`"`) {
		t.Fatal("a tag's history lists another commit")
	}
	res, body = s.get("/ui/apps/acme/nope")
	expect(t, res, body, http.StatusNotFound, "app acme/nope not found")
}
