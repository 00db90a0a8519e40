package operation

import (
	"context"
	"errors"
	"time"
)

// Target is what a backend needs to carry an operation out.
type Target struct {
	Installation  string
	App           string
	Package       string
	Ref           string // the ref the repository URL names
	Commit        string // the commit it resolved to
	Archs         []string
	RepositoryURL string
	Image         string
	Profiles      []string
	Project       string
	Count         int
	PublicKey     string
	KeyName       string
	HealthCommand []string
}

// ErrSkipped, returned by Backend.Do, records a step as skipped.
var ErrSkipped = errors.New("skipped")

// Backend changes instances. Steps must be safe to run again: a replica
// that takes over a crashed operation re-runs the step that was running.
type Backend interface {
	// Steps names the steps of op, in order.
	Steps(op *Operation, t Target) []string
	// Do runs one step; log records lines in the operation's log.
	Do(ctx context.Context, step string, op *Operation, t Target, log func(string)) error
}

// NoBackend is the default when no instance backend is configured: every
// step is recorded, and skipped.
type NoBackend struct {
	// Delay makes each step take this long (for rehearsals and tests of
	// what happens while an operation runs).
	Delay time.Duration
}

// Steps are those an instance backend would run.
func (NoBackend) Steps(op *Operation, _ Target) []string {
	switch op.Kind {
	case KindChangeChannel:
		return []string{"create-instance", "configure-repository", "install-package", "restart-instance", "health-check", "remove-old-instance"}
	case KindUpgrade:
		return []string{"upgrade-package"}
	case KindDelete:
		return []string{"stop-instances", "delete-instances"}
	}
	return nil
}

// Do waits Delay, then skips.
func (b NoBackend) Do(ctx context.Context, step string, _ *Operation, _ Target, log func(string)) error {
	if b.Delay > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(b.Delay):
		}
	}
	log(step + ": no instance backend configured, skipped")
	return ErrSkipped
}
