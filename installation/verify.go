package installation

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/uplinkhq/uplink/artifact"
	"github.com/uplinkhq/uplink/operation"
	"github.com/uplinkhq/uplink/storage"
)

// VerifyStep is the first step of every change-channel and upgrade.
const VerifyStep = "verify-package"

// Verifying decorates a backend with a first step that checks the target
// commit's repository lists the installation's package, so that a pin to
// a commit without it fails before any instance is touched.
type Verifying struct {
	operation.Backend
	Storage storage.Getter
}

// Steps implements operation.Backend.
func (v Verifying) Steps(op *operation.Operation, t operation.Target) []string {
	steps := v.Backend.Steps(op, t)
	if op.Kind == operation.KindDelete {
		return steps
	}
	return append([]string{VerifyStep}, steps...)
}

// Do implements operation.Backend.
func (v Verifying) Do(ctx context.Context, step string, op *operation.Operation, t operation.Target, log func(string)) error {
	if step != VerifyStep {
		return v.Backend.Do(ctx, step, op, t, log)
	}
	app, err := artifact.ParseApp(t.App)
	if err != nil {
		return err
	}
	if len(t.Archs) == 0 {
		return fmt.Errorf("commit %s of %s has no published repository", t.Commit, t.App)
	}
	for _, arch := range t.Archs {
		obj, err := v.Storage.Open(ctx, artifact.Key(app, t.Commit, arch, artifact.IndexFile))
		if err != nil {
			return fmt.Errorf("reading the %s index of %s: %w", arch, t.Commit, err)
		}
		entries, err := artifact.ReadIndex(obj)
		obj.Close()
		if err != nil {
			return fmt.Errorf("the %s index of %s: %w", arch, t.Commit, err)
		}
		i := slices.IndexFunc(entries, func(e artifact.IndexEntry) bool { return e.Name == t.Package })
		if i < 0 {
			names := make([]string, 0, len(entries))
			for _, e := range entries {
				names = append(names, e.Name)
			}
			return fmt.Errorf("package %q is not in the %s repository of commit %s (it has: %s)", t.Package, arch, t.Commit, strings.Join(names, ", "))
		}
		log(fmt.Sprintf("%s: %s-%s is in the %s repository of %s", step, t.Package, entries[i].Version, arch, t.Commit))
	}
	return nil
}
