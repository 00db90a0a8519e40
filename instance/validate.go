package instance

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
)

// MaxInstances bounds instances.count.
const MaxInstances = 100

// ValidName checks an installation name: it becomes part of instance
// names, so it follows DNS labels: 1-50 of [a-z0-9-], not starting or
// ending with '-'.
func ValidName(s string) error {
	if s == "" || len(s) > 50 || s[0] == '-' || s[len(s)-1] == '-' {
		return invalid("installation name %q: want 1-50 of a-z, 0-9 and '-', not starting or ending with '-'", s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return invalid("installation name %q: want 1-50 of a-z, 0-9 and '-', not starting or ending with '-'", s)
		}
	}
	return nil
}

// ValidChannel checks that exactly one of branch, commit and tag is set,
// and well formed.
func ValidChannel(c Channel) error {
	n := 0
	for _, v := range []string{c.Branch, c.Commit, c.Tag} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return invalid(`channel: give exactly one of {"branch": ...}, {"commit": ...} or {"tag": ...}`)
	}
	switch {
	case c.Branch != "":
		return ref.ValidName("branch", c.Branch)
	case c.Tag != "":
		return ref.ValidName("tag", c.Tag)
	}
	if len(c.Commit) < ref.MinAbbrev || len(c.Commit) > 64 || !artifact.IsHex(c.Commit) {
		return invalid("channel commit %q: want a commit SHA, full or at least %d hex digits", c.Commit, ref.MinAbbrev)
	}
	return nil
}

// normalize fills defaults and checks everything that needs no lookup.
func normalize(spec *Spec) error {
	if _, err := artifact.ParseApp(spec.App); err != nil {
		return invalid("app %q: want <org>/<app>", spec.App)
	}
	if err := artifact.ValidName("package", spec.Package); err != nil {
		return err
	}
	if err := ValidChannel(spec.Channel); err != nil {
		return err
	}
	in := &spec.Instances
	if in.Count == 0 {
		in.Count = 1
	}
	if in.Count < 1 || in.Count > MaxInstances {
		return invalid("instances.count %d: want 1 to %d", in.Count, MaxInstances)
	}
	if in.Project == "" {
		in.Project = "default"
	}
	if len(in.Profiles) == 0 {
		in.Profiles = []string{"default"}
	}
	if in.Image == "" || len(in.Image) > 256 || strings.ContainsAny(in.Image, " \t\r\n") {
		return invalid("instances.image %q: want an image alias or fingerprint, e.g. alpine/3.20", in.Image)
	}
	if err := artifact.ValidName("instances.project", in.Project); err != nil {
		return err
	}
	for _, p := range in.Profiles {
		if err := artifact.ValidName("instances.profiles", p); err != nil {
			return err
		}
	}
	// Without public_key, key_name names a key registered for the app
	// (fillKey looks it up).
	if spec.PublicKey != "" {
		if err := validKey(spec.PublicKey); err != nil {
			return err
		}
	}
	if err := distribution.ValidKeyName("key_name", spec.KeyName); err != nil {
		return err
	}
	if len(spec.HealthCommand) > 64 {
		return invalid("health_command: at most 64 arguments")
	}
	for i, a := range spec.HealthCommand {
		if (i == 0 && a == "") || len(a) > 4096 || strings.ContainsRune(a, 0) {
			return invalid("health_command[%d]: empty program, NUL or longer than 4096 bytes", i)
		}
	}
	return nil
}

// KeyLookup finds the keys registered for an app (distribution.Keys).
type KeyLookup interface {
	// PEM returns the key as registered; ref.ErrNotFound when unknown.
	PEM(ctx context.Context, app artifact.App, name string) ([]byte, error)
	Names(ctx context.Context, app artifact.App) ([]string, error)
}

// fillKey gives a spec that names its key by key_name alone the key
// registered under that name.
func (s *Service) fillKey(ctx context.Context, app artifact.App, spec *Spec) error {
	if spec.PublicKey != "" {
		return nil
	}
	if s.cfg.Keys == nil {
		return invalid("public_key: missing")
	}
	pem, err := s.cfg.Keys.PEM(ctx, app, spec.KeyName)
	if errors.Is(err, ref.ErrNotFound) {
		names, err := s.cfg.Keys.Names(ctx, app)
		if err != nil {
			return err
		}
		have := "none is registered"
		if len(names) > 0 {
			have = "registered: " + strings.Join(names, ", ")
		}
		return &UnusableError{Msg: fmt.Sprintf("key_name %q: no key of that name is registered for %s (%s); register it (uplink keys add) or give public_key", spec.KeyName, app, have)}
	}
	if err != nil {
		return err
	}
	spec.PublicKey = string(pem)
	return nil
}

// validKey accepts what apk loads: an RSA key in a "BEGIN PUBLIC KEY" PEM.
func validKey(s string) error {
	block, rest := pem.Decode([]byte(s))
	if block == nil || block.Type != "PUBLIC KEY" || strings.TrimSpace(string(rest)) != "" {
		return invalid(`public_key: want one PEM block "-----BEGIN PUBLIC KEY-----" (apk does not load "RSA PUBLIC KEY")`)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return invalid("public_key: %v", err)
	}
	if _, ok := key.(*rsa.PublicKey); !ok {
		return invalid("public_key: apk signatures need an RSA key, this is %T", key)
	}
	return nil
}
