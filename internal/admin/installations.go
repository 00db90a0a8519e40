package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
)

func (a *API) registerInstallations(g *echo.Group) {
	g.GET("/installations", a.listInstallations)
	g.GET("/installations/:name", a.getInstallation)
	g.PUT("/installations/:name", a.putInstallation)
	g.DELETE("/installations/:name", a.deleteInstallation)
	g.PUT("/installations/:name/channel", a.setChannel)
	g.GET("/installations/:name/history", a.history)
	g.GET("/operations", a.listOperations)
	g.GET("/operations/:id", a.getOperation)
	g.GET("/operations/:id/events", a.operationEvents)
}

func (a *API) listInstallations(c echo.Context) error {
	list, err := a.cfg.Installations.List(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"installations": list})
}

func (a *API) getInstallation(c echo.Context) error {
	v, err := a.cfg.Installations.Get(c.Request().Context(), c.Param("name"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (a *API) putInstallation(c echo.Context) error {
	var spec instance.Spec
	if err := decode(c, &spec); err != nil {
		return err
	}
	v, op, created, err := a.cfg.Installations.Put(c.Request().Context(), c.Param("name"), spec)
	if err != nil {
		return err
	}
	if op != nil && op.To != nil {
		// v still shows the channel the instances run; op moves them.
		a.log.Info("installation channel change started", "installation", v.Name, "channel", op.To.Channel.String(), "operation", op.ID)
	}
	if created {
		return c.JSON(http.StatusCreated, v)
	}
	return c.JSON(http.StatusOK, v)
}

func (a *API) deleteInstallation(c echo.Context) error {
	op, err := a.cfg.Installations.Delete(c.Request().Context(), c.Param("name"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, op)
}

func (a *API) setChannel(c echo.Context) error {
	var ch operation.Channel
	if err := decodeChannel(c, &ch); err != nil {
		return err
	}
	op, err := a.cfg.Installations.SetChannel(c.Request().Context(), c.Param("name"), ch)
	if err != nil {
		return err
	}
	a.log.Info("installation channel change", "installation", c.Param("name"), "to", op.To.String(), "operation", op.ID)
	return c.JSON(http.StatusAccepted, op)
}

// decodeChannel takes exactly {"commit"}, {"tag"} or {"branch"}.
func decodeChannel(c echo.Context, ch *operation.Channel) error {
	var in struct {
		Commit string `json:"commit"`
		Tag    string `json:"tag"`
		Branch string `json:"branch"`
	}
	if err := decode(c, &in); err != nil {
		return err
	}
	*ch = operation.Channel{Commit: in.Commit, Tag: in.Tag, Branch: in.Branch}
	return nil
}

func (a *API) history(c echo.Context) error {
	h, err := a.cfg.Installations.History(c.Request().Context(), c.Param("name"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"history": h})
}

func (a *API) listOperations(c echo.Context) error {
	name := c.QueryParam("installation")
	if name == "" {
		return errorf(http.StatusBadRequest, "invalid", "give ?installation=<name>")
	}
	ops, err := a.cfg.Installations.Operations(c.Request().Context(), name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"operations": ops})
}

func (a *API) getOperation(c echo.Context) error {
	op, err := a.cfg.Installations.Operation(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, op)
}

// EventsPoll is how often an event stream looks for changes; operations
// may run on another replica, so storage is what it watches.
var EventsPoll = 250 * time.Millisecond

// operationEvents streams the operation as Server-Sent Events, one event
// per change, until it ends.
func (a *API) operationEvents(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("id")
	op, err := a.cfg.Installations.Operation(ctx, id)
	if err != nil {
		return err
	}
	w := c.Response()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	var last []byte
	keepalive := time.Now()
	for {
		b, err := json.Marshal(op)
		if err != nil {
			return nil
		}
		if !bytes.Equal(b, last) {
			if _, err := fmt.Fprintf(w, "event: operation\ndata: %s\n\n", b); err != nil {
				return nil
			}
			w.Flush()
			last, keepalive = b, time.Now()
		} else if time.Since(keepalive) > 15*time.Second {
			fmt.Fprint(w, ": keep-alive\n\n")
			w.Flush()
			keepalive = time.Now()
		}
		if op.State.Done() {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(EventsPoll):
		}
		next, err := a.cfg.Installations.Operation(ctx, id)
		if err != nil {
			if ctx.Err() == nil {
				fmt.Fprintf(w, "event: error\ndata: %q\n\n", err.Error())
				w.Flush()
			}
			return nil
		}
		op = next
	}
}
