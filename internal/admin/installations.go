package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/internal/api"
)

func (a *API) listInstallations(c echo.Context) error {
	list, err := a.cfg.Installations.List(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, api.Installations{Installations: mapSlice(list, apiInstallation)})
}

func (a *API) getInstallation(c echo.Context) error {
	v, err := a.cfg.Installations.Get(c.Request().Context(), c.Param("name"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, apiInstallation(v))
}

func (a *API) putInstallation(c echo.Context) error {
	var spec api.Spec
	if err := decode(c, &spec); err != nil {
		return err
	}
	v, op, created, err := a.cfg.Installations.Put(c.Request().Context(), c.Param("name"), domainSpec(spec))
	if err != nil {
		return err
	}
	if op != nil && op.To != nil {
		// v still shows the channel the instances run; op moves them.
		a.log.Info("installation channel change started", "installation", v.Name, "channel", instance.ChannelOf(*op.To).String(), "operation", op.ID)
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return c.JSON(status, apiInstallation(v))
}

func (a *API) deleteInstallation(c echo.Context) error {
	op, err := a.cfg.Installations.Delete(c.Request().Context(), c.Param("name"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, apiOperation(op))
}

// setChannel takes exactly one of {"commit"}, {"tag"} or {"branch"}.
func (a *API) setChannel(c echo.Context) error {
	var ch api.Channel
	if err := decode(c, &ch); err != nil {
		return err
	}
	op, err := a.cfg.Installations.SetChannel(c.Request().Context(), c.Param("name"), instance.Channel(ch))
	if err != nil {
		return err
	}
	a.log.Info("installation channel change", "installation", c.Param("name"), "to", instance.ChannelOf(*op.To).String(), "operation", op.ID)
	return c.JSON(http.StatusAccepted, apiOperation(op))
}

func (a *API) history(c echo.Context) error {
	h, err := a.cfg.Installations.History(c.Request().Context(), c.Param("name"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, api.History{History: mapSlice(h, apiHistoryEntry)})
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
	return c.JSON(http.StatusOK, api.Operations{Operations: mapSlice(ops, apiOperation)})
}

func (a *API) getOperation(c echo.Context) error {
	op, err := a.cfg.Installations.Operation(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, apiOperation(op))
}

// How an event stream follows its operation; variables so that tests can
// shorten them.
var (
	// EventsPoll is how often it looks for changes; operations may run
	// on another replica, so storage is what it watches.
	EventsPoll = 250 * time.Millisecond
	// eventsKeepAlive is how long it stays silent before a comment
	// tells proxies and the client that the stream is alive.
	eventsKeepAlive = 15 * time.Second
)

// operationEvents streams the operation (StreamOperation).
func (a *API) operationEvents(c echo.Context) error {
	return StreamOperation(c, a.cfg.Installations, c.Param("id"))
}

// StreamOperation streams operation id as Server-Sent Events until it
// ends: one "operation" event (the API's JSON of it) each time what the
// API shows of it changes, so lease renewals, which change only the
// stored record, send nothing. An error before the stream starts is
// returned (the operation is unknown, storage is down); the admin API
// and the console's live operation page both serve it.
func StreamOperation(c echo.Context, ops *instance.Service, id string) error {
	ctx := c.Request().Context()
	op, err := ops.Operation(ctx, id)
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
		b, err := json.Marshal(apiOperation(op))
		if err != nil {
			return nil
		}
		if !bytes.Equal(b, last) {
			if _, err := fmt.Fprintf(w, "event: operation\ndata: %s\n\n", b); err != nil {
				return nil
			}
			w.Flush()
			last, keepalive = b, time.Now()
		} else if time.Since(keepalive) > eventsKeepAlive {
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
		next, err := ops.Operation(ctx, id)
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
