// Package console is uplink's web console under /ui/ on the admin
// listener: server-rendered pages over the instance and ref domains, a
// signed session cookie from an admin token, a CSRF token on every form,
// and one small script that follows a running operation live.
package console

import (
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/internal/admin"
	"github.com/uplinkhq/uplink/storage"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config wires the console.
type Config struct {
	Storage       storage.Driver
	Refs          *ref.Store
	Installations *instance.Service
	// Tokens are the admin API's bearer tokens; any one signs in.
	Tokens []string
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Console serves /ui/.
type Console struct {
	cfg      Config
	log      *slog.Logger
	sessions *sessions
	throttle *throttle
	pages    map[string]*template.Template
}

// CSP forbids inline script and style, and framing.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"frame-ancestors 'none'; form-action 'self'; base-uri 'none'"

const cookieName = "uplink_session"

// maxForm bounds a posted form.
const maxForm = 64 << 10

// New returns the console; its signing key is loaded on first use.
func New(cfg Config) *Console {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Console{cfg: cfg, log: cfg.Logger, sessions: newSessions(cfg.Storage), throttle: newThrottle(), pages: parsePages()}
}

// Register mounts the console on e, and makes "/" lead to it.
func (c *Console) Register(e *echo.Echo) {
	e.GET("/", func(ec echo.Context) error { return ec.Redirect(http.StatusFound, "/ui/") })
	e.GET("/ui", func(ec echo.Context) error { return ec.Redirect(http.StatusFound, "/ui/") })
	g := e.Group("/ui", securityHeaders, c.authenticate)
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/ui/static/", http.FileServer(http.FS(static)))
	g.GET("/static/*", func(ec echo.Context) error {
		if strings.HasSuffix(ec.Request().URL.Path, "/") { // no listings
			return ec.String(http.StatusNotFound, "not found")
		}
		files.ServeHTTP(ec.Response(), ec.Request())
		return nil
	})
	g.GET("/login", c.loginPage)
	g.POST("/login", c.login)
	g.POST("/logout", c.logout)
	g.GET("/", c.installations)
	g.GET("/installations/:name", c.installation)
	g.GET("/installations/:name/commits", c.commits)
	g.GET("/installations/:name/channel", c.picker)
	g.GET("/installations/:name/confirm", c.confirm)
	g.POST("/installations/:name/channel", c.change)
	g.GET("/operations/:id", c.operation)
	g.GET("/operations/:id/events", c.events)
	g.GET("/apps", c.apps)
	g.GET("/apps/:org/:app", c.app)
	g.GET("/apps/:org/:app/commits", c.appCommits)
	g.RouteNotFound("/*", func(ec echo.Context) error {
		return c.fail(ec, http.StatusNotFound, "no such page")
	})
}

func securityHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		h := ec.Response().Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		if strings.HasPrefix(ec.Request().URL.Path, "/ui/static/") {
			h.Set("Cache-Control", "public, max-age=300")
		} else {
			h.Set("Cache-Control", "no-store")
		}
		return next(ec)
	}
}

type ctxKey struct{}

// authenticate admits a request with a valid session; a POST also needs
// the session's CSRF token. Sign-in and the static files need neither.
func (c *Console) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		r := ec.Request()
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(ec.Response(), r.Body, maxForm)
		}
		if r.URL.Path == "/ui/login" || strings.HasPrefix(r.URL.Path, "/ui/static/") {
			return next(ec)
		}
		ss, err := c.session(ec)
		if errors.Is(err, errNoSession) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				return ec.Redirect(http.StatusSeeOther, "/ui/login")
			}
			return ec.Redirect(http.StatusSeeOther, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()))
		}
		if err != nil {
			return c.failErr(ec, err)
		}
		csrf, err := c.sessions.csrf(r.Context(), ss)
		if err != nil {
			return c.failErr(ec, err)
		}
		if r.Method == http.MethodPost && subtle.ConstantTimeCompare([]byte(ec.FormValue("csrf")), []byte(csrf)) != 1 {
			return c.fail(ec, http.StatusForbidden, "invalid or missing CSRF token")
		}
		ec.Set("session", ss)
		ec.Set("csrf", csrf)
		return next(ec)
	}
}

func (c *Console) session(ec echo.Context) (session, error) {
	ck, err := ec.Cookie(cookieName)
	if err != nil || ck.Value == "" {
		return session{}, errNoSession
	}
	return c.sessions.verify(ec.Request().Context(), ck.Value, c.cfg.Now())
}

func (c *Console) validToken(token string) bool {
	ok := 0
	for _, t := range c.cfg.Tokens {
		ok |= subtle.ConstantTimeCompare([]byte(token), []byte(t))
	}
	return ok == 1 && token != ""
}

// safeNext is where a sign-in leads: a console path only.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(u.Path, "/ui/") ||
		strings.HasPrefix(next, "//") || strings.Contains(next, "\\") || u.Path == "/ui/login" {
		return "/ui/"
	}
	return u.RequestURI()
}

func (c *Console) loginPage(ec echo.Context) error {
	if _, err := c.session(ec); err == nil {
		return ec.Redirect(http.StatusSeeOther, safeNext(ec.QueryParam("next")))
	}
	return c.render(ec, http.StatusOK, "login", loginView{Next: safeNext(ec.QueryParam("next"))})
}

type loginView struct {
	Next  string
	Error string
}

func (c *Console) login(ec echo.Context) error {
	next := safeNext(ec.FormValue("next"))
	now := c.cfg.Now()
	if c.throttle.blocked(ec.RealIP(), now) {
		return c.render(ec, http.StatusTooManyRequests, "login", loginView{Next: next, Error: "too many failed sign-ins from your address; try again in a few minutes"})
	}
	if !c.validToken(ec.FormValue("token")) {
		c.throttle.fail(ec.RealIP(), now)
		c.log.Warn("console: sign-in refused", "remote", ec.RealIP())
		return c.render(ec, http.StatusUnauthorized, "login", loginView{Next: next, Error: "wrong token"})
	}
	value, ss, err := c.sessions.create(ec.Request().Context(), now)
	if err != nil {
		return c.failErr(ec, err)
	}
	ec.SetCookie(c.cookie(ec, value, ss.Expires))
	c.log.Info("console: signed in", "remote", ec.RealIP())
	return ec.Redirect(http.StatusSeeOther, next)
}

func (c *Console) logout(ec echo.Context) error {
	ss := ec.Get("session").(session)
	if err := c.sessions.revoke(ec.Request().Context(), ss, c.cfg.Now()); err != nil {
		return c.failErr(ec, err)
	}
	gone := c.cookie(ec, "", time.Unix(0, 0))
	gone.MaxAge = -1
	ec.SetCookie(gone)
	return ec.Redirect(http.StatusSeeOther, "/ui/login")
}

func (c *Console) cookie(ec echo.Context, value string, expires time.Time) *http.Cookie {
	return &http.Cookie{
		Name: cookieName, Value: value, Path: "/ui/", Expires: expires, MaxAge: int(expires.Sub(c.cfg.Now()).Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: ec.Scheme() == "https",
	}
}

// events streams an operation to the live page, as the API does.
func (c *Console) events(ec echo.Context) error {
	err := admin.StreamOperation(ec, c.cfg.Installations, ec.Param("id"))
	if err != nil && !ec.Response().Committed {
		status, body := admin.Describe(err)
		return ec.String(status, body.Message)
	}
	return nil
}

func (c *Console) ctx(ec echo.Context) context.Context { return ec.Request().Context() }
