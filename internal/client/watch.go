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
	"reflect"
	"strconv"
	"time"

	"github.com/uplinkhq/uplink/internal/api"
)

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
// up at once when the server was never reached, when it stays unreachable, answers with a client error (an
// unknown operation, a bad token), sends an event it cannot read, or
// when ctx ends. On error it returns the last state seen, if any.
func (c *Client) Watch(ctx context.Context, id string, fn func(*api.Operation)) (*api.Operation, error) {
	var last *api.Operation
	deliver := func(op *api.Operation) {
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
	reached := false   // a server that never answered is not waited for
	for {
		events, err := c.stream(ctx, id, st, deliver)
		reached = reached || events > 0 || (err != nil && !Unreachable(err))
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
		case !reached && Unreachable(gerr):
			return last, gerr
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
func (c *Client) stream(ctx context.Context, id string, st *sseState, deliver func(*api.Operation)) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := time.AfterFunc(watchIdle, cancel)
	defer idle.Stop()

	h := http.Header{"Accept": {"text/event-stream"}, "Cache-Control": {"no-cache"}}
	if st.lastID != "" {
		h.Set("Last-Event-ID", st.lastID)
	}
	resp, err := c.send(ctx, http.MethodGet, operationPath(id)+"/events", "", nil, -1, h)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n := 0
	err = readEvents(resp.Body, st, func() { idle.Reset(watchIdle) }, func(event string, data []byte) (bool, error) {
		if event != "operation" && event != "message" {
			return false, nil // a kind of event this client does not know
		}
		var op api.Operation
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
