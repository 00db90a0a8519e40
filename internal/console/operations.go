package console

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/instance/operation"
)

// operationView is the operation page; console.js keeps it current.
type operationView struct {
	ID, Kind, Installation, State, FromTo, Error string
	Done                                         bool
	Steps                                        []stepRow
	Progress                                     operation.Progress
	Log                                          []operation.LogLine
}

type stepRow struct {
	Name, State, Duration string
}

func (c *Console) operation(ec echo.Context) error {
	op, err := c.cfg.Installations.Operation(c.ctx(ec), ec.Param("id"))
	if err != nil {
		return c.failErr(ec, err)
	}
	out := operationView{
		ID: op.ID, Kind: string(op.Kind), Installation: op.Installation, State: string(op.State), FromTo: fromTo(op),
		Error: op.Error, Done: op.State.Done(), Progress: op.Progress, Log: op.Log,
	}
	now := c.cfg.Now()
	for _, s := range op.Steps {
		out.Steps = append(out.Steps, stepRow{Name: s.Name, State: string(s.State), Duration: stepDuration(s, now)})
	}
	return c.render(ec, http.StatusOK, "operation", out)
}

// stepDuration says how long a step took, or has run so far; console.js
// computes the same.
func stepDuration(s operation.Step, now time.Time) string {
	if s.StartedAt == nil {
		return ""
	}
	end := now
	if s.FinishedAt != nil {
		end = *s.FinishedAt
	}
	d := end.Sub(*s.StartedAt)
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
