package console

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance"
)

// maxCommits bounds a history page.
const maxCommits = 100

// buildView is one published commit as the console shows it.
type buildView struct {
	Commit, Message, Author, Branch string
	Tags, Archs                     []string
	PublishedAt                     time.Time
	// Repository is the line an instance puts in /etc/apk/repositories
	// to install from the commit.
	Repository string
	// RunningHere names the installations that run it.
	RunningHere []string
	Current     bool
}

func (c *Console) buildView(app artifact.App, b ref.Build) buildView {
	return buildView{
		Commit: b.Commit, Message: b.Message, Author: b.Author, Branch: b.Branch, Tags: b.Tags, Archs: b.Archs,
		PublishedAt: b.PublishedAt,
		Repository:  c.cfg.Installations.RepositoryURL(instance.Spec{App: app.String()}, instance.Channel{Commit: b.Commit}),
	}
}

// refOption is one choice of the ref selector.
type refOption struct {
	Value, Label string
	Selected     bool
}

// historyView is a commit history: of an installation (Installation set,
// with Change links) or of an app.
type historyView struct {
	Installation string
	App          string
	Ref          string
	Refs         []refOption
	Commits      []buildView
	Action       string
	// Error says why no builds are listed (an unknown ref).
	Error string
}

// history lists the builds of refName (a branch, or a tag's one commit)
// newest first, and the refs to choose from. An empty refName lists every
// build of the app.
func (c *Console) history(ctx context.Context, app artifact.App, refName string) (historyView, error) {
	refs, err := c.cfg.Refs.Refs(ctx, app)
	if err != nil {
		return historyView{}, err
	}
	out := historyView{App: app.String(), Ref: refName}
	builds, err := c.builds(ctx, app, refs, refName)
	switch {
	case errors.Is(err, ref.ErrNotFound) || errors.Is(err, artifact.ErrInvalid):
		out.Error = "unknown branch or tag " + refName
	case err != nil:
		return historyView{}, err
	}
	for _, b := range builds {
		out.Commits = append(out.Commits, c.buildView(app, b))
	}
	for _, n := range sortedKeys(refs.Branches) {
		out.Refs = append(out.Refs, refOption{Value: n, Label: "branch " + n, Selected: n == refName})
	}
	for _, n := range sortedKeys(refs.Tags) {
		out.Refs = append(out.Refs, refOption{Value: n, Label: "tag " + n, Selected: n == refName})
	}
	return out, nil
}

// builds are those of a branch, or a tag's one build, newest first.
func (c *Console) builds(ctx context.Context, app artifact.App, refs ref.Refs, refName string) ([]ref.Build, error) {
	if _, branch := refs.Branches[refName]; branch || refName == "" {
		return c.cfg.Refs.Builds(ctx, app, refName, maxCommits)
	}
	t, ok := refs.Tags[refName]
	if !ok {
		return nil, &ref.NotFoundError{What: "ref " + refName}
	}
	b, err := c.cfg.Refs.Build(ctx, app, t.Commit)
	return []ref.Build{b}, err
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// defaultRef is the ref whose history an installation's page opens on:
// the branch it tracks, else the branch its pinned build was published
// to, else the branch it last tracked.
func (c *Console) defaultRef(ctx context.Context, app artifact.App, v instance.View) string {
	if v.Channel.Branch != "" {
		return v.Channel.Branch
	}
	if v.ResolvedCommit != "" {
		if b, err := c.cfg.Refs.Build(ctx, app, v.ResolvedCommit); err == nil && b.Branch != "" {
			return b.Branch
		}
	}
	if h, err := c.cfg.Installations.History(ctx, v.Name); err == nil {
		for _, e := range h {
			if e.To.Branch != "" {
				return e.To.Branch
			}
		}
	}
	return ""
}

func (c *Console) commits(ec echo.Context) error {
	ctx := c.ctx(ec)
	v, app, err := c.load(ctx, ec.Param("name"))
	if err != nil {
		return c.failErr(ec, err)
	}
	refName := ec.QueryParam("ref")
	if refName == "" {
		refName = c.defaultRef(ctx, app, v)
	}
	h, err := c.history(ctx, app, refName)
	if err != nil {
		return c.failErr(ec, err)
	}
	h.Installation, h.Action = v.Name, "/ui/installations/"+v.Name+"/commits"
	list, err := c.cfg.Installations.List(ctx)
	if err != nil {
		return c.failErr(ec, err)
	}
	runs := map[string][]string{}
	for _, o := range list {
		if o.App == v.App && o.ResolvedCommit != "" {
			runs[o.ResolvedCommit] = append(runs[o.ResolvedCommit], o.Name)
		}
	}
	for i := range h.Commits {
		h.Commits[i].RunningHere = runs[h.Commits[i].Commit]
		h.Commits[i].Current = h.Commits[i].Commit == v.ResolvedCommit
	}
	return c.render(ec, h.status(), "commits", h)
}

func (h historyView) status() int {
	if h.Error != "" {
		return http.StatusNotFound
	}
	return http.StatusOK
}

// load reads an installation and its app.
func (c *Console) load(ctx context.Context, name string) (instance.View, artifact.App, error) {
	v, err := c.cfg.Installations.Get(ctx, name)
	if err != nil {
		return v, artifact.App{}, err
	}
	app, err := artifact.ParseApp(v.App)
	return v, app, err
}

// refsView is an app's branches and tags: in the channel picker
// (Installation set, with Change links), or on the app's page.
type refsView struct {
	Installation, App, ChannelText string
	Now                            time.Time
	Branches, Tags                 []refRow
}

// refTable is one table of a refsView.
type refTable struct {
	Kind, ID, Title, Column string
	Rows                    []refRow
}

// Tables are the branches, then the tags.
func (v refsView) Tables() []refTable {
	return []refTable{
		{Kind: "branch", ID: "branches", Title: "Branches", Column: "Branch", Rows: v.Branches},
		{Kind: "tag", ID: "tags", Title: "Tags", Column: "Tag", Rows: v.Tags},
	}
}

type refRow struct {
	Name, Commit string
	UpdatedAt    time.Time
	Current      bool
}

func refRows(m map[string]ref.Pointer, current func(name string) bool) []refRow {
	var out []refRow
	for _, n := range sortedKeys(m) {
		out = append(out, refRow{Name: n, Commit: m[n].Commit, UpdatedAt: m[n].UpdatedAt, Current: current(n)})
	}
	return out
}

func (c *Console) picker(ec echo.Context) error {
	ctx := c.ctx(ec)
	v, app, err := c.load(ctx, ec.Param("name"))
	if err != nil {
		return c.failErr(ec, err)
	}
	refs, err := c.cfg.Refs.Refs(ctx, app)
	if err != nil {
		return c.failErr(ec, err)
	}
	return c.render(ec, http.StatusOK, "channel", refsView{
		Installation: v.Name, App: v.App, ChannelText: channelText(v.Channel), Now: c.cfg.Now(),
		Branches: refRows(refs.Branches, func(n string) bool { return v.Channel.Branch == n }),
		Tags:     refRows(refs.Tags, func(n string) bool { return v.Channel.Tag == n }),
	})
}

// confirmView is the confirmation of a channel change, or why it cannot
// be made.
type confirmView struct {
	Installation string
	From, To     string
	// Field and Value are the target as the form posts it.
	Field, Value string
	Commit       *buildView
	// Running is the operation running now, which a change would wait for.
	Running string
	Error   errorView
	// CanChange is false when the target is unknown.
	CanChange bool
}

// target reads the one of commit, branch or tag the request names.
func target(ec echo.Context) (instance.Channel, string, string) {
	for _, f := range []string{"commit", "branch", "tag"} {
		if v := ec.FormValue(f); v != "" {
			switch f {
			case "commit":
				return instance.Channel{Commit: v}, f, v
			case "branch":
				return instance.Channel{Branch: v}, f, v
			}
			return instance.Channel{Tag: v}, f, v
		}
	}
	return instance.Channel{}, "", ""
}

// confirmation checks the target the request names and describes the
// change; an unknown target makes the page say so.
func (c *Console) confirmation(ec echo.Context) (confirmView, int) {
	ctx := c.ctx(ec)
	v, app, err := c.load(ctx, ec.Param("name"))
	if err != nil {
		e := describe(err)
		return confirmView{Installation: ec.Param("name"), Error: e}, e.Status
	}
	ch, field, value := target(ec)
	out := confirmView{Installation: v.Name, From: channelText(v.Channel), Field: field, Value: value}
	if v.Pending != nil {
		out.Running = v.Pending.Operation
	}
	if v.ResolvedCommit != "" && v.Channel.Commit == "" {
		out.From += " (" + short(v.ResolvedCommit) + ")"
	}
	if field == "" {
		out.Error = errorView{Status: http.StatusBadRequest, Message: "choose a commit, a branch or a tag to change to"}
		return out, http.StatusBadRequest
	}
	commit, err := c.resolve(ctx, app, ch)
	if err != nil {
		out.Error = describe(err)
		if errors.Is(err, ref.ErrNotFound) || errors.Is(err, artifact.ErrInvalid) {
			out.Error.Message = "unknown " + field + " " + value + ": " + out.Error.Message
		}
		return out, out.Error.Status
	}
	switch field {
	case "commit":
		out.To = "pinned to " + short(commit)
	case "branch":
		out.To = "tracking " + value + " (" + short(commit) + ")"
	default:
		out.To = "tagged " + value + " (" + short(commit) + ")"
	}
	if b, err := c.cfg.Refs.Build(ctx, app, commit); err == nil {
		bv := c.buildView(app, b)
		out.Commit = &bv
	}
	out.CanChange = true
	return out, http.StatusOK
}

// resolve is the commit ch names now.
func (c *Console) resolve(ctx context.Context, app artifact.App, ch instance.Channel) (string, error) {
	switch {
	case ch.Branch != "":
		if err := ref.ValidName("branch", ch.Branch); err != nil {
			return "", err
		}
		b, err := c.cfg.Refs.Branch(ctx, app, ch.Branch)
		return b.Commit, err
	case ch.Tag != "":
		if err := ref.ValidName("tag", ch.Tag); err != nil {
			return "", err
		}
		t, err := c.cfg.Refs.Tag(ctx, app, ch.Tag)
		return t.Commit, err
	}
	return c.cfg.Refs.Commit(ctx, app, ch.Commit)
}

func (c *Console) confirm(ec echo.Context) error {
	v, status := c.confirmation(ec)
	return c.render(ec, status, "confirm", v)
}

// change makes the confirmed change and leads to its operation; a
// refusal re-renders the confirmation with the reason.
func (c *Console) change(ec echo.Context) error {
	ch, _, _ := target(ec)
	op, err := c.cfg.Installations.SetChannel(c.ctx(ec), ec.Param("name"), ch)
	if err == nil {
		c.log.Info("console: channel change", "installation", ec.Param("name"), "to", ch.String(), "operation", op.ID)
		return ec.Redirect(http.StatusSeeOther, "/ui/operations/"+op.ID)
	}
	v, status := c.confirmation(ec)
	if status == http.StatusOK {
		v.Error = describe(err)
		status = v.Error.Status
		if errors.Is(err, ref.ErrNotFound) {
			v.CanChange = false
		}
	}
	if status >= 500 {
		c.log.Error("console: channel change failed", "installation", ec.Param("name"), "err", err)
		ec.Response().Header().Set("Retry-After", "5")
	}
	return c.render(ec, status, "confirm", v)
}
