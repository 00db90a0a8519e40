package console

import (
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
)

// installationRow is one line of the installations list.
type installationRow struct {
	Name, App, Channel, Commit string
	Running, Desired           int
	OpState, OpID              string
	Failed                     bool
}

func (c *Console) installations(ec echo.Context) error {
	list, err := c.cfg.Installations.List(c.ctx(ec))
	if err != nil {
		return c.failErr(ec, err)
	}
	rows := make([]installationRow, 0, len(list))
	for _, v := range list {
		row := installationRow{
			Name: v.Name, App: v.App, Channel: channelText(v.Channel), Commit: v.ResolvedCommit,
			Running: running(v.Observed), Desired: v.Instances.Count, Failed: v.LastAttempt != nil,
		}
		if op := v.LastOperation; op != nil {
			row.OpState, row.OpID = string(op.State), op.ID
		}
		rows = append(rows, row)
	}
	return c.render(ec, http.StatusOK, "installations", rows)
}

func running(observed []instance.Instance) int {
	n := 0
	for _, i := range observed {
		if strings.EqualFold(i.State, "running") {
			n++
		}
	}
	return n
}

// recentOperations bounds the operations an installation page lists.
const recentOperations = 20

// installationView is the installation page.
type installationView struct {
	instance.View
	ChannelText string
	// Build is the resolved commit's build; nil when it cannot be read.
	Build      *buildView
	Running    int
	Operations []opRow
	History    []historyRow
}

type opRow struct {
	ID, Kind, State, FromTo string
	CreatedAt               time.Time
}

type historyRow struct {
	From, To, Commit, Operation, Result string
	At                                  time.Time
}

func (c *Console) installation(ec echo.Context) error {
	ctx := c.ctx(ec)
	v, err := c.cfg.Installations.Get(ctx, ec.Param("name"))
	if err != nil {
		return c.failErr(ec, err)
	}
	out := installationView{View: v, ChannelText: channelText(v.Channel), Running: running(v.Observed)}
	if app, err := artifact.ParseApp(v.App); err == nil && v.ResolvedCommit != "" {
		if b, err := c.cfg.Refs.Build(ctx, app, v.ResolvedCommit); err == nil {
			bv := c.buildView(app, b)
			out.Build = &bv
		}
	}
	ops, err := c.cfg.Installations.Operations(ctx, v.Name)
	if err != nil {
		return c.failErr(ec, err)
	}
	for i, op := range ops {
		if i == recentOperations {
			break
		}
		out.Operations = append(out.Operations, opRow{ID: op.ID, Kind: string(op.Kind), State: string(op.State), FromTo: fromTo(op), CreatedAt: op.CreatedAt})
	}
	hist, err := c.cfg.Installations.History(ctx, v.Name)
	if err != nil {
		return c.failErr(ec, err)
	}
	for _, h := range hist {
		from := "nothing"
		if h.From != nil {
			from = channelText(*h.From)
		}
		out.History = append(out.History, historyRow{From: from, To: channelText(h.To), Commit: h.Commit, Operation: h.Operation, Result: string(h.Result), At: h.At})
	}
	return c.render(ec, http.StatusOK, "installation", out)
}

// fromTo says what an operation moves from and to.
func fromTo(op *operation.Operation) string {
	end := func(e *operation.Endpoint) string {
		if e == nil {
			return "nothing"
		}
		s := channelText(instance.ChannelOf(*e))
		if e.Resolved != "" && e.Commit == "" {
			s += " (" + short(e.Resolved) + ")"
		}
		return s
	}
	return end(op.From) + " → " + end(op.To)
}
