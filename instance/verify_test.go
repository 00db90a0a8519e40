package instance

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/filesystem"
)

// recorder is a backend that records the steps it was asked to run.
type recorder struct{ ran []string }

func (r *recorder) Steps(op *operation.Operation, t operation.Target) []string {
	return operation.InstanceSteps(op, t)
}

func (r *recorder) Do(_ context.Context, step string, _ *operation.Operation, _ operation.Target, _ func(string)) error {
	r.ran = append(r.ran, step)
	return nil
}

// TestVerifyChecksTheSigner: verify-package passes only an index signed
// under the installation's key name with that key, and says who signed
// it otherwise, before the backend runs anything.
func TestVerifyChecksTheSigner(t *testing.T) {
	ctx := context.Background()
	d, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, other := apktest.NewKey(t), apktest.GenerateKey(t)
	app := artifact.App{Org: "acme", Name: "hello"}
	repo := apktest.BuildRepository(t, key, apktest.DefaultArch, apktest.Package{Name: "hello", Version: "2.0-r3"})
	index := repo[apktest.DefaultArch+"/"+artifact.IndexFile]
	impostor := apktest.Key{Private: other.Private, Name: key.Name} // the right name, another key
	put := func(commit string, b []byte) {
		if _, err := d.Put(ctx, artifact.Key(app, commit, apktest.DefaultArch, artifact.IndexFile), bytes.NewReader(b), int64(len(b)), storage.Condition{}); err != nil {
			t.Fatal(err)
		}
	}
	put("good", index)
	put("other", apktest.SignIndex(t, index, apktest.Signer{Key: other, Algorithm: "RSA256"}))
	put("impostor", apktest.SignIndex(t, index, apktest.Signer{Key: impostor, Algorithm: "RSA"}))
	put("unsigned", apktest.SignIndex(t, index))

	for _, tc := range []struct {
		commit string
		says   []string // in the error; none: success
	}{
		{"good", nil},
		{"other", []string{"signed by " + other.Name, "installation's key is " + key.Name, "UNTRUSTED"}},
		{"impostor", []string{"signed by " + key.Name, "BAD signature"}},
		{"unsigned", []string{"unsigned", key.Name}},
	} {
		be := &recorder{}
		v := Verifying{Backend: be, Storage: d}
		op := &operation.Operation{ID: "web.1", Installation: "web", Kind: operation.KindUpgrade}
		tg := operation.Target{App: app.String(), Package: "hello", Commit: tc.commit, Archs: []string{apktest.DefaultArch},
			Count: 1, PublicKey: string(key.PublicPEM()), KeyName: key.Name}
		steps := v.Steps(op, tg)
		if steps[0] != VerifyStep || steps[1] != "upgrade-instance-1" {
			t.Fatalf("steps: %v", steps)
		}
		var log []string
		err := v.Do(ctx, steps[0], op, tg, func(l string) { log = append(log, l) })
		if tc.says == nil {
			if err != nil || len(log) != 1 || !strings.Contains(log[0], "hello-2.0-r3") || !strings.Contains(log[0], key.Name) {
				t.Errorf("%s: %v, log %q", tc.commit, err, log)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: verified", tc.commit)
			continue
		}
		for _, s := range tc.says {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: %q does not say %q", tc.commit, err, s)
			}
		}
		if len(be.ran) != 0 {
			t.Errorf("%s: the backend ran %v", tc.commit, be.ran)
		}
	}

	vs, err := packageVersions(ctx, d, app, "good", []string{apktest.DefaultArch, "aarch64"}, "hello")
	if vs[apktest.DefaultArch] != "2.0-r3" || len(vs) != 1 || err == nil || !strings.Contains(err.Error(), "aarch64") {
		t.Fatalf("versions %v, err %v", vs, err)
	}
}
