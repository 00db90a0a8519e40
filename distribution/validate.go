package distribution

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/storage"
)

// Codes of a refused publish.
const (
	CodeSignature    = "signature"     // unsigned, or not signed by a key the app trusts
	CodeInvalidIndex = "invalid_index" // an index apk could not read
	CodeIncomplete   = "incomplete"    // a listed file missing or not the one the index describes
)

// Kinds of Problem.
const (
	ProblemUnsigned  = "unsigned"
	ProblemUntrusted = "untrusted"
	ProblemIndex     = "index"
	ProblemMissing   = "missing"
	ProblemSize      = "size"
	ProblemChecksum  = "checksum"
)

// MaxProblems bounds the problems a refusal lists; the rest are counted.
const MaxProblems = 100

// Problem is one reason a build cannot be published. Arch is the index
// that names the problem, File the path below the commit
// ("<arch>/APKINDEX.tar.gz", "<A:>/<P>-<V>.apk").
type Problem struct {
	Arch    string `json:"arch"`
	File    string `json:"file"`
	Kind    string `json:"kind"`
	Problem string `json:"problem"`
}

// ValidationError refuses a publish: the repository would not install.
type ValidationError struct {
	App      artifact.App
	Commit   string
	Code     string
	Problems []Problem // at most MaxProblems
	Omitted  int       // problems beyond MaxProblems
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	switch e.Code {
	case CodeSignature:
		b.WriteString("the index is not signed by a key the app trusts")
	case CodeInvalidIndex:
		b.WriteString("an index cannot be read")
	default:
		b.WriteString("the repository is incomplete")
	}
	fmt.Fprintf(&b, ": commit %s of %s is not published (its files can still be replaced): ", e.Commit, e.App)
	for i, p := range e.Problems {
		if i == 5 {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-i+e.Omitted)
			return b.String()
		}
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", p.File, p.Problem)
	}
	if e.Omitted > 0 {
		fmt.Fprintf(&b, "; and %d more", e.Omitted)
	}
	return b.String()
}

// DefaultValidateConcurrency is how many packages are read at once.
const DefaultValidateConcurrency = 8

// Validator checks a build before it is published, so that a branch never
// moves to a repository that apk would refuse: every index reads, is
// signed by a key the app trusts (or the app allows unsigned indexes),
// and every file it lists is in the build with the index's size and
// control checksum.
type Validator struct {
	Storage interface {
		storage.Getter
		storage.Lister
	}
	Keys *Keys
	// Concurrency bounds the packages read at once
	// (DefaultValidateConcurrency when 0).
	Concurrency int
}

// wantedFile is a package some index lists.
type wantedFile struct {
	arch, path, checksum string // arch: of the index listing it
}

// Validate checks commit's repository for the given archs (those with an
// index). It returns a *ValidationError for a repository that must not be
// published, any other error when storage failed.
func (v *Validator) Validate(ctx context.Context, app artifact.App, commit string, archs []string) error {
	keys, allowUnsigned, err := v.Keys.Trusted(ctx, app)
	if err != nil {
		return err
	}
	prefix := artifact.CommitPrefix(app, commit)
	infos, err := v.Storage.List(ctx, prefix)
	if err != nil {
		return err
	}
	b := &build{app: app, prefix: prefix, keys: keys, allowUnsigned: allowUnsigned, sizes: make(map[string]int64, len(infos))}
	for _, info := range infos {
		b.sizes[strings.TrimPrefix(info.Key, prefix)] = info.Size
	}
	for _, arch := range archs {
		if err := v.checkIndex(ctx, b, arch); err != nil {
			return err
		}
	}
	more, err := v.checksums(ctx, prefix, b.wanted)
	if err != nil {
		return err
	}
	return refusal(app, commit, append(b.problems, more...))
}

// build is what Validate learns of a build, index by index.
type build struct {
	app           artifact.App
	prefix        string
	keys          map[string]*rsa.PublicKey
	allowUnsigned bool
	sizes         map[string]int64 // by path below the commit
	problems      []Problem
	wanted        []wantedFile // packages whose checksum is left to check
}

// checkIndex reads arch's index, checks its signature and that every
// file it lists is in the build with the listed size. It returns only
// storage errors.
func (v *Validator) checkIndex(ctx context.Context, b *build, arch string) error {
	file := arch + "/" + artifact.IndexFile
	raw, err := v.readIndex(ctx, b.prefix+file)
	if errors.Is(err, ErrIndexTooLarge) {
		b.problems = append(b.problems, Problem{arch, file, ProblemIndex, fmt.Sprintf("larger than %d bytes", MaxIndexSize)})
		return nil
	}
	if err != nil {
		return err
	}
	entries, err := artifact.ReadIndex(bytes.NewReader(raw))
	if err != nil {
		b.problems = append(b.problems, Problem{arch, file, ProblemIndex, err.Error()})
		return nil
	}
	if p, ok := signatureProblem(b.app, raw, b.keys, b.allowUnsigned); !ok {
		p.Arch, p.File = arch, file
		b.problems = append(b.problems, p)
	}
	for _, e := range entries {
		// A package lives under its own A: arch, e.g. noarch, not the
		// index's (apk-protocol.md §1).
		dir := e.Arch
		if dir == "" {
			dir = arch
		}
		path := dir + "/" + e.Filename()
		bad := func(kind, format string, args ...any) {
			b.problems = append(b.problems, Problem{arch, path, kind, fmt.Sprintf(format, args...)})
		}
		if artifact.ValidName("arch", dir) != nil || artifact.ValidFile(e.Filename()) != nil {
			bad(ProblemMissing, "apk would fetch %s, which is not a valid artifact path", path)
			continue
		}
		size, ok := b.sizes[path]
		switch {
		case !ok:
			bad(ProblemMissing, "listed in the index but not in the build")
		case e.Size >= 0 && e.Size != size:
			bad(ProblemSize, "%d bytes, the index says %d (S:)", size, e.Size)
		case e.Checksum == "":
			// apk trusts a package only through the index's C: (apk-protocol.md §5).
			bad(ProblemChecksum, "the index gives no checksum (C:) for it")
		default:
			b.wanted = append(b.wanted, wantedFile{arch, path, e.Checksum})
		}
	}
	return nil
}

// refusal is the *ValidationError for problems, nil when there are none.
func refusal(app artifact.App, commit string, problems []Problem) error {
	if len(problems) == 0 {
		return nil
	}
	e := &ValidationError{App: app, Commit: commit, Code: CodeIncomplete}
	if slices.ContainsFunc(problems, func(p Problem) bool { return p.Kind == ProblemIndex }) {
		e.Code = CodeInvalidIndex
	}
	if slices.ContainsFunc(problems, func(p Problem) bool { return p.Kind == ProblemUnsigned || p.Kind == ProblemUntrusted }) {
		e.Code = CodeSignature
	}
	// Signature problems first: they matter most.
	slices.SortStableFunc(problems, func(a, b Problem) int {
		return rank(a) - rank(b)
	})
	if len(problems) > MaxProblems {
		e.Omitted = len(problems) - MaxProblems
		problems = problems[:MaxProblems]
	}
	e.Problems = problems
	return e
}

func rank(p Problem) int {
	switch p.Kind {
	case ProblemUnsigned, ProblemUntrusted:
		return 0
	case ProblemIndex:
		return 1
	}
	return 2
}

// signatureProblem applies the app's signing rule to one index.
func signatureProblem(app artifact.App, raw []byte, keys map[string]*rsa.PublicKey, allowUnsigned bool) (Problem, bool) {
	sigs, _, err := artifact.ReadSignatures(raw)
	if err != nil {
		return Problem{Kind: ProblemIndex, Problem: err.Error()}, false
	}
	if len(sigs) == 0 {
		if allowUnsigned {
			return Problem{}, true
		}
		msg := "unsigned index: sign it (abuild-sign) with a key the app trusts, registered with `uplink keys add " + app.String() +
			" <name>.rsa.pub`, or allow unsigned indexes with PATCH /api/v1/apps/" + app.String() + ` {"allow_unsigned":true}`
		if len(keys) > 0 {
			msg += " (trusted keys: " + strings.Join(sortedNames(keys), ", ") + ")"
		}
		return Problem{Kind: ProblemUnsigned, Problem: msg}, false
	}
	if len(keys) == 0 {
		// Nothing to check it against: signed is all that can be asked.
		return Problem{}, true
	}
	if _, err := artifact.VerifyIndex(raw, keys); err != nil {
		var se *artifact.SignatureError
		if !errors.As(err, &se) {
			return Problem{Kind: ProblemIndex, Problem: err.Error()}, false
		}
		return Problem{Kind: ProblemUntrusted, Problem: se.Error()}, false
	}
	return Problem{}, true
}

func sortedNames(keys map[string]*rsa.PublicKey) []string {
	names := make([]string, 0, len(keys))
	for n := range keys {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (v *Validator) readIndex(ctx context.Context, key string) ([]byte, error) {
	obj, err := v.Storage.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	if obj.Info().Size > MaxIndexSize {
		return nil, ErrIndexTooLarge
	}
	b, err := io.ReadAll(io.LimitReader(obj, MaxIndexSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxIndexSize {
		return nil, ErrIndexTooLarge
	}
	return b, nil
}

// checksums reads the front of each wanted package, a bounded number at
// a time, and compares its control checksum with the index's C:.
func (v *Validator) checksums(ctx context.Context, prefix string, wanted []wantedFile) ([]Problem, error) {
	// Several indexes may list one file (noarch): read it once.
	paths := make([]string, 0, len(wanted))
	for _, w := range wanted {
		if !slices.Contains(paths, w.path) {
			paths = append(paths, w.path)
		}
	}
	got := make([]string, len(paths))
	g, gctx := errgroup.WithContext(ctx)
	n := v.Concurrency
	if n <= 0 {
		n = DefaultValidateConcurrency
	}
	g.SetLimit(n)
	for i, path := range paths {
		g.Go(func() error {
			sum, err := v.checksum(gctx, prefix+path)
			if err != nil {
				return err
			}
			got[i] = sum
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var problems []Problem
	for _, w := range wanted {
		sum := got[slices.Index(paths, w.path)]
		if strings.HasPrefix(sum, "!") {
			problems = append(problems, Problem{w.arch, w.path, ProblemChecksum, sum[1:]})
			continue
		}
		if !sameChecksum(w.checksum, sum) {
			problems = append(problems, Problem{w.arch, w.path, ProblemChecksum,
				fmt.Sprintf("control checksum %s, the index says %s (C:): apk would refuse it (\"BAD signature\")", sum, w.checksum)})
		}
	}
	return problems, nil
}

// checksum returns a package's C: value, or "!" and why it is not a
// package. Storage failures are errors.
func (v *Validator) checksum(ctx context.Context, key string) (string, error) {
	obj, err := v.Storage.Open(ctx, key)
	if err != nil {
		return "", err
	}
	defer obj.Close()
	r := &readErr{r: obj}
	sum, err := artifact.PackageChecksum(r)
	if r.err != nil {
		return "", r.err
	}
	if err != nil {
		return "!not an APK package: " + err.Error(), nil
	}
	return sum, nil
}

// readErr remembers a read error of the storage object, to tell a storage
// failure from a malformed package.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && r.err == nil {
		r.err = err
	}
	return n, err
}

// sameChecksum compares an index's C: with a computed "Q1" checksum.
// apk-tools also accepts "X1<hex>" for the same SHA-1 (apk-protocol.md §3).
func sameChecksum(index, q1 string) bool {
	if index == q1 {
		return true
	}
	hexSum, ok := strings.CutPrefix(index, "X1")
	if !ok {
		return false
	}
	want, err1 := hex.DecodeString(hexSum)
	have, err2 := base64.StdEncoding.DecodeString(strings.TrimPrefix(q1, "Q1"))
	return err1 == nil && err2 == nil && bytes.Equal(want, have)
}
