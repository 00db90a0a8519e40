package distribution

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/uplinkhq/uplink/storage"
)

// DefaultStorageTimeout bounds how long a distribution read waits on
// storage: for the first byte (Open, Stat and the first body byte
// together), then for each read of the body.
const DefaultStorageTimeout = 5 * time.Second

// ErrStorageTimeout is why a read was cut: storage did not answer within
// the storage timeout.
var ErrStorageTimeout = errors.New("storage did not answer within the storage timeout")

// guard bounds the storage calls of one response. Storage calls run under
// ctx, which the timer cancels: a frozen S3 (connections accepted, nothing
// answered) otherwise holds a request for as long as the freeze lasts. The
// timer first runs from the guard's start to the first byte, then once per
// read, stopped in between, so a slow client (whose writes have their own
// deadline) never counts against storage.
type guard struct {
	ctx     context.Context
	cancel  context.CancelCauseFunc
	timer   *time.Timer
	timeout time.Duration
	started bool // the first read has returned
}

func newGuard(parent context.Context, timeout time.Duration) *guard {
	g := &guard{timeout: timeout}
	g.ctx, g.cancel = context.WithCancelCause(parent)
	if timeout > 0 {
		g.timer = time.AfterFunc(timeout, func() { g.cancel(ErrStorageTimeout) })
	}
	return g
}

// read reads from r under the deadline: the first byte's for the first
// read, a fresh one for every later one.
func (g *guard) read(r io.Reader, p []byte) (int, error) {
	if g.started && g.timer != nil {
		g.timer.Reset(g.timeout)
	}
	n, err := r.Read(p)
	g.started = true
	if g.timer != nil {
		g.timer.Stop()
	}
	return n, g.err(err)
}

// err marks an error caused by the deadline as ErrStorageTimeout (the
// driver only sees a cancelled context).
func (g *guard) err(err error) error {
	if err == nil || err == io.EOF || !g.timedOut() {
		return err
	}
	return fmt.Errorf("%w: %w", ErrStorageTimeout, err)
}

func (g *guard) timedOut() bool { return errors.Is(context.Cause(g.ctx), ErrStorageTimeout) }

// stop releases the timer and cancels whatever storage call is left.
func (g *guard) stop() {
	if g.timer != nil {
		g.timer.Stop()
	}
	g.cancel(context.Canceled)
}

// open opens key under the first-byte deadline.
func (g *guard) open(s storage.Getter, key string) (storage.Object, error) {
	obj, err := s.Open(g.ctx, key)
	return obj, g.err(err)
}

// guardedObject is an Object for http.ServeContent whose reads have the
// guard's deadlines and whose first read error is kept: ServeContent
// drops it, and a body cut short must not end like a complete one.
// ServeContent reads multipart bodies from another goroutine, which can
// still be inside Read when ServeContent returns: mu keeps Close from
// racing it.
type guardedObject struct {
	g   *guard
	obj storage.Object

	mu  sync.Mutex
	bad error
}

func (o *guardedObject) Read(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, err := o.g.read(o.obj, p)
	if err != nil && err != io.EOF && o.bad == nil {
		o.bad = err
	}
	return n, err
}

func (o *guardedObject) Seek(offset int64, whence int) (int64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.obj.Seek(offset, whence)
}

// failed returns the first read error.
func (o *guardedObject) failed() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bad
}

// close cancels a read still in flight, waits for it, and closes the
// object.
func (o *guardedObject) close() {
	o.g.stop()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.obj.Close()
}
