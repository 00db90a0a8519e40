package console_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/uplinkhq/uplink/internal/console"
)

func TestSignedOutRedirects(t *testing.T) {
	s := newSite(t, 0)
	for _, p := range []string{"/ui/", "/ui/installations/web", "/ui/operations/web.1", "/ui/apps", "/ui/nothing-here"} {
		res, body := s.get(p)
		want := "/ui/login?next=" + url.QueryEscape(p)
		if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != want {
			t.Fatalf("GET %s signed out: %d to %q, want 303 to %q\n%s", p, res.StatusCode, res.Header.Get("Location"), want, body)
		}
	}
	res, _ := s.post("/ui/installations/web/channel", url.Values{"commit": {"abc"}})
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/login" {
		t.Fatalf("POST signed out: %d to %q", res.StatusCode, res.Header.Get("Location"))
	}
	res, body := s.get("/ui/login")
	expect(t, res, body, http.StatusOK, `id="login"`, `type="password"`, `name="token"`)
	res, _ = s.do(http.DefaultClient, http.MethodGet, "/", nil)
	if res.Request.URL.Path != "/ui/login" {
		t.Fatalf("/ leads to %s", res.Request.URL)
	}
}

func TestSignIn(t *testing.T) {
	s := newSite(t, 0)
	res, body := s.post("/ui/login", url.Values{"token": {"wrong-token-0123456789"}})
	expect(t, res, body, http.StatusUnauthorized, `<p class="error">`)
	if len(res.Cookies()) != 0 {
		t.Fatal("a wrong token got a cookie")
	}

	res, _ = s.post("/ui/login", url.Values{"token": {unitToken}, "next": {"/ui/apps"}})
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/apps" {
		t.Fatalf("sign-in with next: %d to %q", res.StatusCode, res.Header.Get("Location"))
	}
	ck := res.Cookies()[0]
	if ck.Name != "uplink_session" || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/ui/" ||
		ck.MaxAge < int(console.SessionTTL.Seconds())-5 || ck.MaxAge > int(console.SessionTTL.Seconds()) || ck.Secure {
		t.Fatalf("cookie %+v", ck)
	}
	if strings.Contains(ck.Value, unitToken) {
		t.Fatal("the cookie holds the token")
	}
	res, body = s.get("/ui/")
	expect(t, res, body, http.StatusOK, `id="nav-installations"`, `id="signout"`)
	if strings.Contains(body, unitToken) {
		t.Fatal("the page shows the token")
	}

	// Only console paths are followed after sign-in.
	for _, next := range []string{"https://evil.example/", "//evil.example/ui/", "/api/v1/apps", "/ui/login"} {
		res, _ = s.do(s.newClient(), http.MethodPost, "/ui/login", url.Values{"token": {unitToken}, "next": {next}})
		if res.Header.Get("Location") != "/ui/" {
			t.Fatalf("next %q led to %q", next, res.Header.Get("Location"))
		}
	}
}

// A session works on every replica and after a restart; signing out ends
// it on every one.
func TestSessionAcrossReplicasAndSignOut(t *testing.T) {
	s := newSite(t, 0)
	s.signIn()
	csrf := s.csrf()
	other := s.serve(s.drv)
	first := s.url

	s.url = other
	res, body := s.get("/ui/")
	expect(t, res, body, http.StatusOK, `id="installations"`, `csrf" value="`+csrf)

	s.url = first
	res, _ = s.post("/ui/logout", url.Values{"csrf": {"wrong"}})
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-out without its CSRF token: %d", res.StatusCode)
	}
	// Keep the cookie to replay it after sign-out.
	u, _ := url.Parse(first + "/ui/")
	cookies := s.client.Jar.Cookies(u)
	res, _ = s.post("/ui/logout", url.Values{"csrf": {csrf}})
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/login" {
		t.Fatalf("sign-out: %d to %q", res.StatusCode, res.Header.Get("Location"))
	}
	for _, base := range []string{first, other} {
		replay := s.newClient()
		bu, _ := url.Parse(base + "/ui/")
		replay.Jar.SetCookies(bu, cookies)
		s.url = base
		res, _ = s.do(replay, http.MethodGet, "/ui/", nil)
		if res.StatusCode != http.StatusSeeOther {
			t.Fatalf("a signed-out cookie still works on %s: %d", base, res.StatusCode)
		}
	}
}

func TestHeaders(t *testing.T) {
	s := newSite(t, 0)
	for _, p := range []string{"/ui/login", "/ui/static/console.css", "/ui/"} {
		res, _ := s.get(p)
		h := res.Header
		if h.Get("Content-Security-Policy") != console.CSP || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "same-origin" {
			t.Fatalf("GET %s: headers %v", p, h)
		}
		cache := h.Get("Cache-Control")
		if strings.HasPrefix(p, "/ui/static/") == (cache == "no-store") {
			t.Fatalf("GET %s: Cache-Control %q", p, cache)
		}
	}
	if !strings.Contains(console.CSP, "script-src 'self';") || strings.Contains(console.CSP, "unsafe-inline") {
		t.Fatal(console.CSP)
	}
}

func TestSignInThrottled(t *testing.T) {
	s := newSite(t, 0)
	for i := 0; i < 10; i++ {
		if res, _ := s.post("/ui/login", url.Values{"token": {"guess-0123456789abcdef"}}); res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i, res.StatusCode)
		}
	}
	res, body := s.post("/ui/login", url.Values{"token": {unitToken}})
	expect(t, res, body, http.StatusTooManyRequests, `<p class="error">too many failed sign-ins`)
	if res, _ := s.get("/ui/static/"); res.StatusCode != http.StatusNotFound {
		t.Fatalf("static listing: %d", res.StatusCode)
	}
}
