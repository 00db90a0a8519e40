package instance

import (
	"bytes"
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/storage"
)

// VerifyStep is the first step of every change-channel and upgrade.
const VerifyStep = "verify-package"

// maxIndexSize bounds how much of an index is read into memory (Alpine's
// own main/x86_64 index is about 1 MiB).
const maxIndexSize = 64 << 20

// Verifying decorates a backend with a first step that checks the target
// commit's repository lists the installation's package and is signed by
// the installation's key, so that a change to a commit without the
// package, or one the instances' apk would refuse as UNTRUSTED, fails
// before any instance is created or touched.
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
	key, err := artifact.ParsePublicKey([]byte(t.PublicKey))
	if err != nil {
		return fmt.Errorf("the installation's public key %s: %w", t.KeyName, err)
	}
	for _, arch := range t.Archs {
		raw, err := readIndex(ctx, v.Storage, app, t.Commit, arch)
		if err != nil {
			return err
		}
		// apk opens /etc/apk/keys/<the name the signature entry names>
		// and nothing else (apk-protocol.md §5): the instances get the
		// installation's key under t.KeyName, so the index must be signed
		// by that name and that key.
		if _, err := artifact.VerifyIndex(raw, map[string]*rsa.PublicKey{t.KeyName: key}); err != nil {
			var se *artifact.SignatureError
			if errors.As(err, &se) {
				signer := "nobody (unsigned)"
				if len(se.Signers) > 0 {
					signer = strings.Join(se.Signers, ", ")
				}
				return fmt.Errorf("the %s index of commit %s is signed by %s, but the installation's key is %s: %s; apk on the instances would refuse it",
					arch, t.Commit, signer, t.KeyName, se.Reason)
			}
			return fmt.Errorf("the %s index of %s: %w", arch, t.Commit, err)
		}
		entries, err := artifact.ReadIndex(bytes.NewReader(raw))
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
		log(fmt.Sprintf("%s: %s-%s is in the %s repository of %s, signed by %s", step, t.Package, entries[i].Version, arch, t.Commit, t.KeyName))
	}
	return nil
}

func readIndex(ctx context.Context, st storage.Getter, app artifact.App, commit, arch string) ([]byte, error) {
	obj, err := st.Open(ctx, artifact.Key(app, commit, arch, artifact.IndexFile))
	if err != nil {
		return nil, fmt.Errorf("reading the %s index of %s: %w", arch, commit, err)
	}
	defer obj.Close()
	raw, err := io.ReadAll(io.LimitReader(obj, maxIndexSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading the %s index of %s: %w", arch, commit, err)
	}
	if len(raw) > maxIndexSize {
		return nil, fmt.Errorf("the %s index of %s is larger than %d MiB", arch, commit, maxIndexSize>>20)
	}
	return raw, nil
}

// packageVersions returns, per arch of commit, the version of pkg its
// index lists; an arch whose index cannot be read or lacks pkg is left
// out, and the reasons joined in the error.
func packageVersions(ctx context.Context, st storage.Getter, app artifact.App, commit string, archs []string, pkg string) (map[string]string, error) {
	out := make(map[string]string, len(archs))
	var errs []error
	for _, arch := range archs {
		raw, err := readIndex(ctx, st, app, commit, arch)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		entries, err := artifact.ReadIndex(bytes.NewReader(raw))
		if err != nil {
			errs = append(errs, fmt.Errorf("the %s index of %s: %w", arch, commit, err))
			continue
		}
		if i := slices.IndexFunc(entries, func(e artifact.IndexEntry) bool { return e.Name == pkg }); i >= 0 {
			out[arch] = entries[i].Version
		} else {
			errs = append(errs, fmt.Errorf("package %q is not in the %s repository of commit %s", pkg, arch, commit))
		}
	}
	return out, errors.Join(errs...)
}
