package console

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/internal/admin"
)

// page is what every template gets: the CSRF token for its forms, and
// the page's own view.
type page struct {
	CSRF   string
	Signed bool
	Now    time.Time
	Data   any
}

var funcs = template.FuncMap{
	"short":    short,
	"channel":  channelText,
	"abs":      func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"iso":      func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"clock":    func(t time.Time) string { return t.UTC().Format("15:04:05") },
	"ago":      ago,
	"joinList": func(s []string) string { return strings.Join(s, ", ") },
	"at":       func(now, t time.Time) whenArgs { return whenArgs{Now: now, T: t} },
}

// whenArgs is what the "when" template shows: t, relative to now and
// absolute.
type whenArgs struct{ Now, T time.Time }

// parsePages parses each page with the layout around it.
func parsePages() map[string]*template.Template {
	layout := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/parts.html"))
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" || base == "parts" {
			continue
		}
		out[base] = template.Must(template.Must(layout.Clone()).ParseFS(templateFS, n))
	}
	return out
}

func (c *Console) render(ec echo.Context, status int, name string, data any) error {
	p := page{Now: c.cfg.Now(), Data: data}
	if v, ok := ec.Get("csrf").(string); ok {
		p.CSRF, p.Signed = v, true
	}
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout.html", p); err != nil {
		c.log.Error("console: rendering", "page", name, "err", err)
		return ec.String(http.StatusInternalServerError, "the page could not be rendered")
	}
	return ec.HTMLBlob(status, buf.Bytes())
}

// errorView is a page that says what went wrong.
type errorView struct {
	Status    int
	Message   string
	Operation string
}

func (c *Console) fail(ec echo.Context, status int, format string, args ...any) error {
	return c.render(ec, status, "error", errorView{Status: status, Message: fmt.Sprintf(format, args...)})
}

// failErr says err in the words of the API's error table.
func (c *Console) failErr(ec echo.Context, err error) error {
	v := describe(err)
	if v.Status >= 500 {
		c.log.Error("console: request failed", "path", ec.Request().URL.Path, "err", err)
	}
	if v.Status == http.StatusServiceUnavailable {
		ec.Response().Header().Set("Retry-After", "5")
	}
	return c.render(ec, v.Status, "error", v)
}

// describe is the API's answer to err, in a sentence.
func describe(err error) errorView {
	status, body := admin.Describe(err)
	v := errorView{Status: status, Message: body.Message, Operation: body.Operation}
	if body.Operation != "" {
		v.Message = "operation " + body.Operation + " is running; wait for it to end"
	}
	return v
}

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

// channelText says a channel the way the whole console does.
func channelText(ch instance.Channel) string {
	switch {
	case ch.Commit != "" && ch.Tag != "":
		return "tagged " + ch.Tag
	case ch.Commit != "":
		return "pinned to " + short(ch.Commit)
	case ch.Branch != "":
		return "tracking " + ch.Branch
	}
	return "not deployed yet"
}

// ago says how long before now t was, roughly.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case t.IsZero():
		return ""
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return plural(int(d/time.Minute), "minute") + " ago"
	case d < 48*time.Hour:
		return plural(int(d/time.Hour), "hour") + " ago"
	}
	return plural(int(d/(24*time.Hour)), "day") + " ago"
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}
