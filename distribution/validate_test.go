package distribution_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/internal/apkfile"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/storage"
)

const commit = "0123456789abcdef0123456789abcdef01234567"

type validation struct {
	d    storage.Driver
	keys *distribution.Keys
	v    *distribution.Validator
}

func newValidation(t *testing.T) *validation {
	d := newStore(t)
	keys := distribution.NewKeys(d)
	return &validation{d: d, keys: keys, v: &distribution.Validator{Storage: d, Keys: keys}}
}

// upload stores files ("<arch>/<file>") under the test commit, replacing
// what an earlier upload left.
func (x *validation) upload(t *testing.T, files map[string][]byte) {
	t.Helper()
	prefix := artifact.CommitPrefix(acme, commit)
	old, _ := x.d.List(t.Context(), prefix)
	for _, o := range old {
		x.d.Delete(t.Context(), o.Key)
	}
	for p, b := range files {
		if _, err := x.d.Put(t.Context(), prefix+p, bytes.NewReader(b), int64(len(b)), storage.Condition{}); err != nil {
			t.Fatal(err)
		}
	}
}

func (x *validation) validate(t *testing.T, files map[string][]byte) error {
	t.Helper()
	x.upload(t, files)
	var archs []string
	for p := range files {
		if a, f, _ := strings.Cut(p, "/"); f == artifact.IndexFile {
			archs = append(archs, a)
		}
	}
	slices.Sort(archs)
	return x.v.Validate(t.Context(), acme, commit, archs)
}

// refused checks err is a refusal with code whose problems name each of
// files (and no other) and say each of says.
func refused(t *testing.T, what string, err error, code string, files []string, says ...string) *distribution.ValidationError {
	t.Helper()
	var ve *distribution.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("%s: %v, want a refusal with code %s", what, err, code)
	}
	if ve.Code != code {
		t.Errorf("%s: code %s, want %s (%v)", what, ve.Code, code, ve)
	}
	var got []string
	for _, p := range ve.Problems {
		got = append(got, p.File)
	}
	slices.Sort(got)
	slices.Sort(files)
	if !slices.Equal(got, files) {
		t.Errorf("%s: problems name %v, want %v (%v)", what, got, files, ve)
	}
	for _, s := range says {
		if !strings.Contains(ve.Error(), s) {
			t.Errorf("%s: message %q does not say %q", what, ve.Error(), s)
		}
	}
	return ve
}

func helloRepo(t *testing.T, key apktest.Key, pkgs ...apktest.Package) map[string][]byte {
	if len(pkgs) == 0 {
		pkgs = []apktest.Package{{Name: "hello", Version: "1.0-r0", Files: []apktest.File{{Path: "usr/share/hello/VERSION", Data: []byte("A")}}}}
	}
	return apktest.BuildRepository(t, key, apktest.DefaultArch, pkgs...)
}

const (
	indexPath = "x86_64/APKINDEX.tar.gz"
	pkgPath   = "x86_64/hello-1.0-r0.apk"
)

func TestValidateSignatures(t *testing.T) {
	x := newValidation(t)
	ctx := t.Context()
	key := apktest.NewKey(t)
	key.Name = alpineKey // abuild's name for it
	other := apktest.GenerateKey(t)
	files := helloRepo(t, key)
	unsigned := clone(files)
	unsigned[indexPath] = apktest.SignIndex(t, files[indexPath])

	// No key registered: signed by anyone passes, unsigned does not.
	if err := x.validate(t, files); err != nil {
		t.Fatalf("signed, no keys registered: %v", err)
	}
	ve := refused(t, "unsigned, no keys", x.validate(t, unsigned), distribution.CodeSignature, []string{indexPath}, "unsigned", "allow_unsigned")
	if ve.Problems[0].Kind != distribution.ProblemUnsigned || ve.Problems[0].Arch != "x86_64" {
		t.Errorf("problem %+v", ve.Problems[0])
	}
	if _, err := x.keys.SetAllowUnsigned(ctx, acme, true); err != nil {
		t.Fatal(err)
	}
	if err := x.validate(t, unsigned); err != nil {
		t.Fatalf("unsigned, allowed: %v", err)
	}
	x.keys.SetAllowUnsigned(ctx, acme, false)

	// Registered keys: only they sign.
	if _, _, err := x.keys.Put(ctx, acme, key.Name, key.PublicPEM()); err != nil {
		t.Fatal(err)
	}
	if err := x.validate(t, files); err != nil {
		t.Fatalf("signed by the registered key: %v", err)
	}
	rsa256 := clone(files)
	rsa256[indexPath] = apktest.SignIndex(t, files[indexPath], apktest.Signer{Key: key, Algorithm: "RSA256"})
	if err := x.validate(t, rsa256); err != nil {
		t.Fatalf("RSA256 by the registered key: %v", err)
	}
	byOther := clone(files)
	byOther[indexPath] = apktest.SignIndex(t, files[indexPath], apktest.Signer{Key: other, Algorithm: "RSA"})
	refused(t, "signed by an unregistered key", x.validate(t, byOther), distribution.CodeSignature, []string{indexPath},
		"UNTRUSTED", other.Name, key.Name)
	// A registered name with another key's signature is a BAD signature.
	impostor := other
	impostor.Name = key.Name
	bad := clone(files)
	bad[indexPath] = apktest.SignIndex(t, files[indexPath], apktest.Signer{Key: impostor, Algorithm: "RSA256"})
	refused(t, "signed under the registered name by another key", x.validate(t, bad), distribution.CodeSignature, []string{indexPath}, "BAD signature")
	tampered := clone(files)
	tampered[indexPath] = apktest.Tamper(files[indexPath])
	refused(t, "altered after signing", x.validate(t, tampered), distribution.CodeSignature, []string{indexPath}, "BAD signature")
	// The first signature apk can check counts (apk-protocol.md §5).
	both := clone(files)
	both[indexPath] = apktest.SignIndex(t, files[indexPath], apktest.Signer{Key: other, Algorithm: "RSA"}, apktest.Signer{Key: key, Algorithm: "RSA"})
	if err := x.validate(t, both); err != nil {
		t.Fatalf("signed by an unknown and then the registered key: %v", err)
	}
	// With keys, allow_unsigned still admits an unsigned index, never an untrusted one.
	refused(t, "unsigned, keys registered", x.validate(t, unsigned), distribution.CodeSignature, []string{indexPath}, "unsigned", key.Name)
	x.keys.SetAllowUnsigned(ctx, acme, true)
	if err := x.validate(t, unsigned); err != nil {
		t.Fatalf("unsigned, allowed, keys registered: %v", err)
	}
	refused(t, "untrusted, unsigned allowed", x.validate(t, byOther), distribution.CodeSignature, []string{indexPath}, "UNTRUSTED")
}

func clone(files map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(files))
	for k, v := range files {
		out[k] = v
	}
	return out
}

// otherControl returns pkg with its control member changed but its size
// kept: the gzip header's MTIME, which decompressors ignore.
func otherControl(t *testing.T, pkg []byte) []byte {
	members, err := apkfile.Members(pkg)
	if err != nil {
		t.Fatal(err)
	}
	i := apkfile.ControlMember(members)
	off := 0
	for _, m := range members[:i] {
		off += len(m)
	}
	out := bytes.Clone(pkg)
	out[off+4] ^= 0xff
	return out
}

func TestValidateFiles(t *testing.T) {
	x := newValidation(t)
	key := apktest.NewKey(t)
	files := helloRepo(t, key)

	missing := clone(files)
	delete(missing, pkgPath)
	refused(t, "missing package", x.validate(t, missing), distribution.CodeIncomplete, []string{pkgPath}, "not in the build")

	longer := clone(files)
	longer[pkgPath] = append(bytes.Clone(files[pkgPath]), 0)
	refused(t, "wrong size", x.validate(t, longer), distribution.CodeIncomplete, []string{pkgPath},
		fmt.Sprintf("%d bytes, the index says %d", len(files[pkgPath])+1, len(files[pkgPath])))

	rebuilt := clone(files)
	rebuilt[pkgPath] = otherControl(t, files[pkgPath])
	if len(rebuilt[pkgPath]) != len(files[pkgPath]) {
		t.Fatal("test setup: the size changed")
	}
	ve := refused(t, "same size, other control", x.validate(t, rebuilt), distribution.CodeIncomplete, []string{pkgPath}, "control checksum")
	if ve.Problems[0].Kind != distribution.ProblemChecksum {
		t.Errorf("kind %q", ve.Problems[0].Kind)
	}

	garbage := clone(files)
	garbage[pkgPath] = bytes.Repeat([]byte("x"), len(files[pkgPath]))
	refused(t, "not a package", x.validate(t, garbage), distribution.CodeIncomplete, []string{pkgPath}, "not an APK package")

	notIndex := clone(files)
	notIndex[indexPath] = []byte("not an index")
	refused(t, "unreadable index", x.validate(t, notIndex), distribution.CodeInvalidIndex, []string{indexPath})

	// Repaired: passes.
	if err := x.validate(t, files); err != nil {
		t.Fatalf("the whole repository: %v", err)
	}
}

// A noarch package is fetched from <base>/noarch/, whatever index lists
// it (apk-protocol.md §1), and several archs' indexes may list it.
func TestValidateNoarch(t *testing.T) {
	x := newValidation(t)
	key := apktest.NewKey(t)
	data := apktest.BuildPackage(t, key, apktest.Package{Name: "data", Version: "1-r0", Arch: "noarch"})
	hello86 := apktest.BuildPackage(t, key, apktest.Package{Name: "hello", Version: "1.0-r0", Arch: "x86_64"})
	helloArm := apktest.BuildPackage(t, key, apktest.Package{Name: "hello", Version: "1.0-r0", Arch: "aarch64"})
	files := map[string][]byte{
		"x86_64/APKINDEX.tar.gz":  apktest.BuildIndex(t, key, []apktest.BuiltPackage{hello86, data}, ""),
		"aarch64/APKINDEX.tar.gz": apktest.BuildIndex(t, key, []apktest.BuiltPackage{helloArm, data}, ""),
		hello86.Path():            hello86.APK,
		helloArm.Path():           helloArm.APK,
		data.Path():               data.APK,
	}
	if err := x.validate(t, files); err != nil {
		t.Fatalf("noarch under noarch/: %v", err)
	}
	wrongDir := clone(files)
	delete(wrongDir, data.Path())
	wrongDir["x86_64/"+data.Filename()] = data.APK
	ve := refused(t, "noarch package under the index's arch", x.validate(t, wrongDir), distribution.CodeIncomplete,
		[]string{"noarch/data-1-r0.apk", "noarch/data-1-r0.apk"})
	archs := []string{ve.Problems[0].Arch, ve.Problems[1].Arch}
	slices.Sort(archs)
	if !slices.Equal(archs, []string{"aarch64", "x86_64"}) {
		t.Errorf("each index's problem names its arch: %v", archs)
	}
}

// countingStore counts concurrent package opens and can fail them.
type countingStore struct {
	storage.Driver
	open, peak atomic.Int32
	fail       error
}

type slowObject struct {
	storage.Object
	s *countingStore
}

func (o slowObject) Close() error { o.s.open.Add(-1); return o.Object.Close() }

func (s *countingStore) Open(ctx context.Context, key string) (storage.Object, error) {
	if !strings.HasSuffix(key, ".apk") {
		return s.Driver.Open(ctx, key)
	}
	if s.fail != nil {
		return nil, s.fail
	}
	n := s.open.Add(1)
	for {
		p := s.peak.Load()
		if n <= p || s.peak.CompareAndSwap(p, n) {
			break
		}
	}
	time.Sleep(5 * time.Millisecond)
	obj, err := s.Driver.Open(ctx, key)
	if err != nil {
		s.open.Add(-1)
		return nil, err
	}
	return slowObject{obj, s}, nil
}

func TestValidateBoundedAndStorageErrors(t *testing.T) {
	x := newValidation(t)
	key := apktest.NewKey(t)
	var pkgs []apktest.Package
	for i := range 40 {
		pkgs = append(pkgs, apktest.Package{Name: fmt.Sprintf("p%02d", i), Version: "1-r0"})
	}
	files := helloRepo(t, key, pkgs...)
	x.upload(t, files)
	cs := &countingStore{Driver: x.d}
	v := &distribution.Validator{Storage: cs, Keys: x.keys, Concurrency: 3}
	if err := v.Validate(t.Context(), acme, commit, []string{"x86_64"}); err != nil {
		t.Fatal(err)
	}
	if p := cs.peak.Load(); p < 2 || p > 3 {
		t.Errorf("peak concurrent package reads %d, want 2..3", p)
	}
	if cs.open.Load() != 0 {
		t.Errorf("%d packages left open", cs.open.Load())
	}

	// Storage failing is not the build's fault: no refusal.
	cs.fail = errors.New("connection reset")
	err := v.Validate(t.Context(), acme, commit, []string{"x86_64"})
	var ve *distribution.ValidationError
	if err == nil || errors.As(err, &ve) {
		t.Fatalf("storage failing: %v, want a plain error", err)
	}
	// A canceled request stops.
	cs.fail = nil
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := v.Validate(ctx, acme, commit, []string{"x86_64"}); err == nil || errors.As(err, &ve) {
		t.Fatalf("canceled: %v", err)
	}
}

// Many problems: the list is bounded and the rest counted.
func TestValidateManyProblems(t *testing.T) {
	x := newValidation(t)
	key := apktest.NewKey(t)
	var built []apktest.BuiltPackage
	for i := range distribution.MaxProblems + 20 {
		built = append(built, apktest.BuiltPackage{
			Package: apktest.Package{Name: fmt.Sprintf("p%03d", i), Version: "1-r0", Arch: "x86_64"},
			APK:     []byte("x"),
		})
	}
	files := map[string][]byte{indexPath: apktest.BuildIndex(t, key, built, "")}
	err := x.validate(t, files)
	var ve *distribution.ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != distribution.MaxProblems || ve.Omitted != 20 {
		t.Fatalf("%d problems, %d omitted (%v)", len(ve.Problems), ve.Omitted, err)
	}
	if !strings.Contains(ve.Error(), "and 115 more") {
		t.Errorf("message %q", ve.Error())
	}
}
