package operation

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Target is what a backend needs to carry an operation out.
type Target struct {
	Installation string
	App          string
	Package      string
	Ref          string // the ref the repository URL names
	Commit       string // the commit it resolved to
	Archs        []string
	// Versions maps each arch of the commit to the version of Package
	// its index lists: what every instance must end up running, exactly
	// (an upgrade, or a downgrade when a branch moved back).
	Versions      map[string]string
	RepositoryURL string
	Image         string
	Profiles      []string
	Project       string
	Count         int
	PublicKey     string
	KeyName       string
	HealthCommand []string
}

// Version is the version an instance of arch must run: the one the
// commit's index for arch lists; for an arch the commit has no index for
// (or that cannot be told), the version all indexes agree on; false when
// there is none.
func (t Target) Version(arch string) (string, bool) {
	if v, ok := t.Versions[arch]; ok {
		return v, true
	}
	var only string
	for _, v := range t.Versions {
		if only != "" && v != only {
			return "", false
		}
		only = v
	}
	return only, only != ""
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

// The steps of instance operations. Those that act on one instance are
// named "<step>-<i>" in an operation (see InstanceSteps, SplitStep).
const (
	StepCreateInstance       = "create-instance"
	StepStartInstance        = "start-instance"
	StepConfigureRepository  = "configure-repository"
	StepInstallPackage       = "install-package"
	StepRestartInstance      = "restart-instance"
	StepHealthCheck          = "health-check"
	StepRemoveOldInstance    = "remove-old-instance"
	StepRemoveExtraInstances = "remove-extra-instances"
	StepUpgradeInstance      = "upgrade-instance"
	StepDeleteInstances      = "delete-instances"
)

// BootstrapSteps are the per-instance steps of a change-channel, in
// order: the new instance is fully up, its installed version checked and
// healthy before an old one goes, so an installation of two or more
// always keeps one running.
var BootstrapSteps = []string{StepCreateInstance, StepStartInstance, StepConfigureRepository, StepInstallPackage,
	StepRestartInstance, StepHealthCheck, StepRemoveOldInstance}

// InstanceSteps names the steps of op for an installation of t.Count
// instances: "<step>-<i>" per instance. It is the one list: the instance
// backend runs these; NoBackend records the same ones, so a rehearsal
// shows the real plan.
func InstanceSteps(op *Operation, t Target) []string {
	var steps []string
	n := max(t.Count, 1)
	switch op.Kind {
	case KindChangeChannel:
		for i := 1; i <= n; i++ {
			for _, s := range BootstrapSteps {
				steps = append(steps, s+"-"+strconv.Itoa(i))
			}
		}
		steps = append(steps, StepRemoveExtraInstances)
	case KindUpgrade:
		for i := 1; i <= n; i++ {
			steps = append(steps, StepUpgradeInstance+"-"+strconv.Itoa(i))
		}
	case KindDelete:
		steps = append(steps, StepDeleteInstances)
	}
	return steps
}

// SplitStep splits a step name of InstanceSteps into the step and the
// instance it acts on: "install-package-2" is StepInstallPackage and 2;
// a step of no one instance has 0.
func SplitStep(name string) (string, int) {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return name, 0
	}
	n, err := strconv.Atoi(name[i+1:])
	if err != nil {
		return name, 0
	}
	return name[:i], n
}

// Steps are those the instance backend runs.
func (NoBackend) Steps(op *Operation, t Target) []string { return InstanceSteps(op, t) }

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
