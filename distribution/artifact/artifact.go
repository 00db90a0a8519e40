// Package artifact owns the object-storage layout that CI (pakman) fills:
//
//	deployments/<org>/<app>/<commit>/<arch>/APKINDEX.tar.gz
//	deployments/<org>/<app>/<commit>/<arch>/<name>-<version>.apk
//
// and the rules for every name that appears in it.
package artifact

import (
	"errors"
	"fmt"
	"strings"
)

// IndexFile is the name of a repository index.
const IndexFile = "APKINDEX.tar.gz"

// MaxNameLength bounds every single name (org, app, arch, file).
const MaxNameLength = 128

// Errors returned by the validators; each wraps ErrInvalid.
var ErrInvalid = errors.New("invalid name")

// App names one application: "<org>/<app>".
type App struct {
	Org  string
	Name string
}

func (a App) String() string { return a.Org + "/" + a.Name }

// ParseApp parses "<org>/<app>".
func ParseApp(s string) (App, error) {
	org, name, ok := strings.Cut(s, "/")
	if !ok {
		return App{}, fmt.Errorf("%w: app %q is not <org>/<app>", ErrInvalid, s)
	}
	a := App{Org: org, Name: name}
	return a, a.Validate()
}

// Validate checks both names.
func (a App) Validate() error {
	if err := ValidName("org", a.Org); err != nil {
		return err
	}
	return ValidName("app", a.Name)
}

// ValidName checks an org, app or arch name: 1..128 of [A-Za-z0-9._+-],
// not starting with '.' or '-'.
func ValidName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalid, what)
	}
	if len(s) > MaxNameLength {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, what, MaxNameLength)
	}
	if s[0] == '.' || s[0] == '-' {
		return fmt.Errorf("%w: %s %q starts with %q", ErrInvalid, what, s, s[0])
	}
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return fmt.Errorf("%w: %s %q has a character outside [A-Za-z0-9._+-]", ErrInvalid, what, s)
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '+' || c == '-'
}

// ValidFile checks a file name inside an arch directory: the index or a
// package "<name>-<version>.apk".
func ValidFile(s string) error {
	if s == IndexFile {
		return nil
	}
	if err := ValidName("file", s); err != nil {
		return err
	}
	if !strings.HasSuffix(s, ".apk") || len(s) <= len(".apk") {
		return fmt.Errorf("%w: file %q is neither %s nor a .apk package", ErrInvalid, s, IndexFile)
	}
	return nil
}

// IsIndex reports whether file is the repository index.
func IsIndex(file string) bool { return file == IndexFile }

// ParseCommit checks a full commit SHA: 40 or 64 hex digits. It returns
// the lowercase form.
func ParseCommit(s string) (string, error) {
	if (len(s) != 40 && len(s) != 64) || !IsHex(s) {
		return "", fmt.Errorf("%w: commit %q is not a full hex SHA (40 or 64 digits)", ErrInvalid, s)
	}
	return strings.ToLower(s), nil
}

// IsFullCommit reports whether s is a full lowercase commit SHA.
func IsFullCommit(s string) bool {
	return (len(s) == 40 || len(s) == 64) && isLowerHex(s)
}

// IsHex reports whether s is non-empty and all hex digits.
func IsHex(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// CommitPrefix returns the storage prefix holding one commit's repository.
func CommitPrefix(app App, commit string) string {
	return "deployments/" + app.Org + "/" + app.Name + "/" + commit + "/"
}

// Key returns the storage key of one artifact file. Callers validate the
// parts first.
func Key(app App, commit, arch, file string) string {
	return CommitPrefix(app, commit) + arch + "/" + file
}
