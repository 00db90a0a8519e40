package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
)

// Installations lists the installations.
func (c *Client) Installations(ctx context.Context) ([]instance.View, error) {
	var out struct {
		Installations []instance.View `json:"installations"`
	}
	return out.Installations, c.json(ctx, http.MethodGet, "/api/v1/installations", nil, &out)
}

// Installation returns one installation.
func (c *Client) Installation(ctx context.Context, name string) (instance.View, error) {
	var v instance.View
	return v, c.json(ctx, http.MethodGet, installationPath(name), nil, &v)
}

// PutInstallation creates (created is true) or updates an installation.
func (c *Client) PutInstallation(ctx context.Context, name string, spec instance.Spec) (v instance.View, created bool, err error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return v, false, err
	}
	status, err := c.do(ctx, http.MethodPut, installationPath(name), "application/json", bytes.NewReader(b), int64(len(b)), &v)
	return v, status == http.StatusCreated, err
}

// DeleteInstallation starts the operation that removes an installation's
// instances. While another operation of the installation runs, the error
// is a *BusyError.
func (c *Client) DeleteInstallation(ctx context.Context, name string) (*operation.Operation, error) {
	var op operation.Operation
	if err := c.call(ctx, http.MethodDelete, installationPath(name), name, nil, &op); err != nil {
		return nil, err
	}
	return &op, nil
}

// SetChannel changes an installation's channel and returns the operation
// that carries the change out; the installation's channel moves when that
// operation succeeds (if it fails, View.LastAttempt says so and the
// channel stays). to names exactly one of a commit (full or
// abbreviated SHA) to pin to, a tag to pin to the commit it names now, or
// a branch to track. While another operation of the installation runs,
// the error is a *BusyError.
func (c *Client) SetChannel(ctx context.Context, name string, to instance.Channel) (*operation.Operation, error) {
	n := 0
	for _, s := range []string{to.Commit, to.Tag, to.Branch} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("a channel change names exactly one of a commit, a tag or a branch")
	}
	var op operation.Operation
	if err := c.call(ctx, http.MethodPut, installationPath(name)+"/channel", name, to, &op); err != nil {
		return nil, err
	}
	return &op, nil
}

// History lists an installation's channel changes, newest first.
func (c *Client) History(ctx context.Context, name string) ([]instance.HistoryEntry, error) {
	var out struct {
		History []instance.HistoryEntry `json:"history"`
	}
	return out.History, c.json(ctx, http.MethodGet, installationPath(name)+"/history", nil, &out)
}

// Operation returns one operation.
func (c *Client) Operation(ctx context.Context, id string) (*operation.Operation, error) {
	var op operation.Operation
	if err := c.json(ctx, http.MethodGet, operationPath(id), nil, &op); err != nil {
		return nil, err
	}
	return &op, nil
}

// Operations lists an installation's operations, newest first.
func (c *Client) Operations(ctx context.Context, installationName string) ([]*operation.Operation, error) {
	p := "/api/v1/operations"
	if installationName != "" {
		p += "?" + url.Values{"installation": {installationName}}.Encode()
	}
	var out struct {
		Operations []*operation.Operation `json:"operations"`
	}
	return out.Operations, c.json(ctx, http.MethodGet, p, nil, &out)
}

func installationPath(name string) string { return "/api/v1/installations/" + url.PathEscape(name) }

func operationPath(id string) string { return "/api/v1/operations/" + url.PathEscape(id) }

// BusyError is the 409 answer to a change of an installation while
// another of its operations runs.
type BusyError struct {
	Err *Error
	// Operation is the running operation's id, when the answer names it.
	Operation string
}

func (e *BusyError) Error() string { return e.Err.Error() }

// Unwrap makes errors.As(err, **Error) see the API's error.
func (e *BusyError) Unwrap() error { return e.Err }

// newRequest makes an authorized request.
func (c *Client) newRequest(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// errorBody is the API's error answer, with the fields a 409 may add.
type errorBody struct {
	Error struct {
		Error
		Operation   string `json:"operation"`
		OperationID string `json:"operation_id"`
	} `json:"error"`
}

// readError turns an answer of status 300 or more into an *Error (a
// *BusyError for an installation's operation_running conflict).
func readError(resp *http.Response, installationName string) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e errorBody
	if json.Unmarshal(b, &e) != nil || e.Error.Message == "" {
		e.Error.Error = Error{Code: "error", Message: strings.TrimSpace(string(b))}
		if e.Error.Message == "" {
			e.Error.Message = resp.Status
		}
	}
	apiErr := e.Error.Error
	apiErr.Status = resp.StatusCode
	if resp.StatusCode != http.StatusConflict || apiErr.Code != "operation_running" || installationName == "" {
		return &apiErr
	}
	busy := &BusyError{Err: &apiErr, Operation: e.Error.Operation}
	if busy.Operation == "" {
		busy.Operation = e.Error.OperationID
	}
	if busy.Operation == "" {
		// Operation ids are "<installation>.<seq>"; the message names it.
		re := regexp.MustCompile(`(?:^|[^A-Za-z0-9_.-])(` + regexp.QuoteMeta(installationName) + `\.[0-9]+)(?:$|[^A-Za-z0-9_-])`)
		if m := re.FindStringSubmatch(apiErr.Message); m != nil {
			busy.Operation = m[1]
		}
	}
	return busy
}

// call is json for requests whose 409 answers become *BusyError.
func (c *Client) call(ctx context.Context, method, path, installationName string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return readError(resp, installationName)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decoding the answer of %s %s: %w", method, path, err)
		}
	}
	return nil
}

// How Watch follows a stream. Variables so that tests can shorten them.
var (
	// watchIdle: a stream silent this long (no event, no keep-alive
	// comment) is taken for dead and replaced.
	watchIdle = 2 * time.Minute
	// watchBackoff bounds the wait before reconnecting.
	watchMinBackoff = 250 * time.Millisecond
	watchMaxBackoff = 5 * time.Second
	// watchGiveUp: Watch fails once the server has been unreachable
	// this long.
	watchGiveUp = 2 * time.Minute
	// maxEvent bounds one event's data.
	maxEvent = 64 << 20
)

// Watch follows operation id until it ends and returns its final state.
// It reads the operation's Server-Sent Events and calls fn (when not nil)
// with each state it sees, in order. When the stream breaks before the
// operation ended (a restarted server, a proxy's timeout, a silent
// connection), it asks for the operation afresh and reconnects; it gives
// up when the server stays unreachable, answers with a client error (an
// unknown operation, a bad token), sends an event it cannot read, or
// when ctx ends. On error it returns the last state seen, if any.
func (c *Client) Watch(ctx context.Context, id string, fn func(*operation.Operation)) (*operation.Operation, error) {
	var last *operation.Operation
	deliver := func(op *operation.Operation) {
		if last != nil && reflect.DeepEqual(last, op) {
			return
		}
		last = op
		if fn != nil {
			fn(op)
		}
	}
	st := &sseState{}
	backoff := watchMinBackoff
	var down time.Time // since when the server is unreachable
	for {
		events, err := c.stream(ctx, id, st, deliver)
		if last != nil && last.State.Done() {
			return last, nil
		}
		if ctx.Err() != nil {
			return last, ctx.Err()
		}
		if fatal(err) {
			return last, err
		}
		// The stream ended before the operation did: see where it is now.
		op, gerr := c.Operation(ctx, id)
		switch {
		case gerr == nil:
			deliver(op)
			if op.State.Done() {
				return op, nil
			}
			down = time.Time{}
		case ctx.Err() != nil:
			return last, ctx.Err()
		case fatal(gerr):
			return last, gerr
		default:
			if err == nil {
				err = gerr
			}
			if down.IsZero() {
				down = time.Now()
			} else if time.Since(down) > watchGiveUp {
				return last, fmt.Errorf("following operation %s: server unreachable for %s: %w", id, time.Since(down).Round(time.Second), err)
			}
		}
		if events > 0 {
			backoff = max(watchMinBackoff, st.retry)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return last, ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, max(watchMaxBackoff, st.retry))
	}
}

// fatal reports an error that reconnecting cannot cure: a client error
// of the API (except timeouts and rate limits) or an unreadable event.
func fatal(err error) bool {
	var pe *protocolError
	if errors.As(err, &pe) {
		return true
	}
	var ae *Error
	return errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 &&
		ae.Status != http.StatusRequestTimeout && ae.Status != http.StatusTooManyRequests
}

type protocolError struct{ err error }

func (e *protocolError) Error() string { return e.err.Error() }
func (e *protocolError) Unwrap() error { return e.err }

// sseState is what outlives one connection of an event stream.
type sseState struct {
	lastID string        // sent back as Last-Event-ID
	retry  time.Duration // the server's reconnection delay
}

// stream reads one connection of operation id's event stream, passing
// each operation event to deliver, until the stream ends, an event
// reports a final state, or an error. It returns how many events it read.
func (c *Client) stream(ctx context.Context, id string, st *sseState, deliver func(*operation.Operation)) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := time.AfterFunc(watchIdle, cancel)
	defer idle.Stop()

	req, err := c.newRequest(ctx, http.MethodGet, operationPath(id)+"/events", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if st.lastID != "" {
		req.Header.Set("Last-Event-ID", st.lastID)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return 0, readError(resp, "")
	}
	n := 0
	err = readEvents(resp.Body, st, func() { idle.Reset(watchIdle) }, func(event string, data []byte) (bool, error) {
		if event != "operation" && event != "message" {
			return false, nil // a kind of event this client does not know
		}
		var op operation.Operation
		if err := json.Unmarshal(data, &op); err != nil {
			return false, &protocolError{fmt.Errorf("operation %s: unreadable %q event: %w", id, event, err)}
		}
		n++
		deliver(&op)
		return op.State.Done(), nil
	})
	return n, err
}

// readEvents parses a text/event-stream, calling alive for every line and
// dispatch for every complete event, until dispatch says stop, the stream
// ends (an event cut off by the end is dropped) or fails.
func readEvents(r io.Reader, st *sseState, alive func(), dispatch func(event string, data []byte) (stop bool, err error)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxEvent)
	sc.Split(scanSSELines)
	var (
		event   string
		data    bytes.Buffer
		hasData bool
	)
	first := true
	for sc.Scan() {
		alive()
		line := sc.Bytes()
		if first {
			line = bytes.TrimPrefix(line, []byte("\xEF\xBB\xBF"))
			first = false
		}
		if len(line) == 0 {
			if hasData {
				if event == "" {
					event = "message"
				}
				if stop, err := dispatch(event, data.Bytes()); stop || err != nil {
					return err
				}
			}
			event, hasData = "", false
			data.Reset()
			continue
		}
		if line[0] == ':' {
			continue // a comment: a keep-alive
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "event":
			event = string(value)
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			if data.Len()+len(value) > maxEvent {
				return &protocolError{fmt.Errorf("event stream: an event over %d bytes", maxEvent)}
			}
			data.Write(value)
			hasData = true
		case "id":
			if !bytes.ContainsRune(value, 0) {
				st.lastID = string(value)
			}
		case "retry":
			if ms, err := strconv.ParseUint(string(value), 10, 31); err == nil {
				st.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

// scanSSELines splits at CRLF, LF or CR, as text/event-stream allows.
func scanSSELines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		if data[i] == '\n' {
			return i + 1, data[:i], nil
		}
		if i+1 < len(data) {
			if data[i+1] == '\n' {
				return i + 2, data[:i], nil
			}
			return i + 1, data[:i], nil
		}
		if !atEOF {
			return 0, nil, nil // a CR at the end: an LF may follow
		}
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
