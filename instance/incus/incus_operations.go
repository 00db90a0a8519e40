package incus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Operation is a handle on a background operation, as returned by the
// calls that change instances.
type Operation interface {
	// Get returns the last known state of the operation.
	Get() OperationInfo
	// WaitContext waits until the operation ends. A failure is an
	// *OperationError; an operation the server no longer knows is a 404
	// *StatusError (IsNotFound: re-read the instance instead). The result
	// of an ended operation is kept, since the server forgets it 5 s after
	// it ends; a wait cut short by ctx may be repeated.
	WaitContext(ctx context.Context) error
}

// OperationError is an operation that ended in failure or was cancelled.
type OperationError struct {
	ID         string
	StatusCode StatusCode
	Err        string
}

func (e *OperationError) Error() string {
	if e.Err != "" {
		return e.Err
	}
	return fmt.Sprintf("operation %s ended with status %d", e.ID, e.StatusCode)
}

// waitTimeout is the length in seconds of one /wait long poll: bounded, so
// that a lost answer or a stuck connection cannot hang a wait for ever.
const waitTimeout = 30

// GetOperation returns the current state of an operation.
func (c *ProtocolIncus) GetOperation(ctx context.Context, id string) (*OperationInfo, string, error) {
	var op OperationInfo
	etag, err := c.queryStruct(ctx, http.MethodGet, "/1.0/operations/"+url.PathEscape(id), nil, nil, "", &op)
	if err != nil {
		return nil, "", err
	}
	return &op, etag, nil
}

// GetOperationWait long-polls an operation for up to timeout seconds (-1:
// no limit) and returns its state, which is not final if the time ran out.
// Incus 6.0.x reports a timeout or a failure as an error instead; see
// Operation.WaitContext for the loop that copes with both.
func (c *ProtocolIncus) GetOperationWait(ctx context.Context, id string, timeout int) (*OperationInfo, string, error) {
	var op OperationInfo
	q := url.Values{"timeout": {strconv.Itoa(timeout)}}
	etag, err := c.queryStruct(ctx, http.MethodGet, "/1.0/operations/"+url.PathEscape(id)+"/wait", q, nil, "", &op)
	if err != nil {
		return nil, "", err
	}
	return &op, etag, nil
}

// queryOperation sends a request that answers with an operation.
func (c *ProtocolIncus) queryOperation(ctx context.Context, method, p string, q url.Values, body any, etag string) (*operation, error) {
	r, _, err := c.query(ctx, method, p, q, body, etag)
	if err != nil {
		return nil, err
	}
	if r.Type != "async" {
		// Some calls are synchronous on some versions: already done.
		return doneOperation(c), nil
	}
	op := &operation{c: c}
	if err := json.Unmarshal(r.Metadata, &op.info); err != nil {
		return nil, fmt.Errorf("incus: decode operation of %s %s: %w", method, p, err)
	}
	if op.info.ID == "" {
		op.info.ID = path.Base(r.Operation)
	}
	return op, nil
}

// asOperation keeps a failed call from returning a non-nil Operation that
// holds a nil *operation.
func asOperation(op *operation, err error) (Operation, error) {
	if err != nil {
		return nil, err
	}
	return op, nil
}

// doneOperation is an operation that has already succeeded.
func doneOperation(c *ProtocolIncus) *operation {
	return &operation{c: c, info: OperationInfo{Status: "Success", StatusCode: Success}}
}

type operation struct {
	c *ProtocolIncus

	mu   sync.Mutex // guards info
	info OperationInfo

	waitMu sync.Mutex // one waiter at a time; guards the fields below
	done   bool
	err    error
	// okErr is a failure message that counts as success, e.g. "already
	// stopped" for a stop.
	okErr string
}

func (op *operation) Get() OperationInfo {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.info
}

func (op *operation) set(info OperationInfo) {
	op.mu.Lock()
	defer op.mu.Unlock()
	op.info = info
}

func (op *operation) WaitContext(ctx context.Context) error {
	op.waitMu.Lock()
	defer op.waitMu.Unlock()
	if op.done {
		return op.err
	}
	err := op.wait(ctx)
	if err != nil && op.okErr != "" && strings.Contains(err.Error(), op.okErr) {
		err = nil
	}
	return op.finish(ctx, err)
}

// finish records the result, unless the wait was merely cut short by ctx.
func (op *operation) finish(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return err
	}
	op.done, op.err = true, err
	return err
}

// wait waits until the operation is final and returns its failure.
func (op *operation) wait(ctx context.Context) error {
	info := op.Get()
	for !info.StatusCode.IsFinal() {
		got, err := op.poll(ctx, info.ID)
		if err != nil {
			return err
		}
		info = *got
		op.set(info)
	}
	if info.Err != "" || info.StatusCode == Failure || info.StatusCode == Cancelled {
		return &OperationError{ID: info.ID, StatusCode: info.StatusCode, Err: info.Err}
	}
	return nil
}

// poll is one round of the robust /wait loop of the reference (§3), which
// copes with the ways servers answer a wait:
//   - sync with the operation (LXD, Incus >= 6.12), final or not;
//   - Incus 6.0-6.11: HTTP 200 with type:"error". "context deadline
//     exceeded" means not done yet; anything else is read back from the
//     operation itself, which the server keeps for 5 s after it ends;
//   - if the operation is gone by then, the wait error is the failure.
func (op *operation) poll(ctx context.Context, id string) (*OperationInfo, error) {
	info, _, err := op.c.GetOperationWait(ctx, id, pollSeconds(ctx))
	if err == nil {
		return info, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var se *StatusError
	if !errors.As(err, &se) {
		return nil, err
	}
	if strings.Contains(se.msg, "context deadline exceeded") {
		cur := op.Get()
		return &cur, nil
	}
	info, _, gerr := op.c.GetOperation(ctx, id)
	if IsNotFound(gerr) {
		return nil, err
	}
	if gerr != nil {
		return nil, gerr
	}
	if !info.StatusCode.IsFinal() {
		// Nothing long-polled this round: pause before the next.
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return info, nil
}

// pollSeconds is the /wait timeout: waitTimeout, or less to end with ctx.
func pollSeconds(ctx context.Context) int {
	t := waitTimeout
	if dl, ok := ctx.Deadline(); ok {
		if s := int(math.Ceil(time.Until(dl).Seconds())); s < t {
			t = max(s, 1)
		}
	}
	return t
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
