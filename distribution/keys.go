package distribution

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/storage"
)

// KeysPrefix is where instances fetch an app's trusted keys.
const KeysPrefix = "/keys/"

// MaxKeySize bounds a registered public key; an RSA-16384 PEM is about
// 3 KiB.
const MaxKeySize = 16 << 10

// MaxKeys bounds the keys one app trusts.
const MaxKeys = 64

// MaxKeyNameLength is the longest file name Linux allows.
const MaxKeyNameLength = 255

// KeySuffix ends every key name: abuild names keys <name>.rsa.pub, and
// go-apk and apko accept only signature entries ".SIGN.RSA.<...>.rsa.pub"
// (apk-protocol.md §5), so a key by any other name could sign indexes
// that part of the apk ecosystem refuses.
const KeySuffix = ".rsa.pub"

// ValidKeyName checks a key's name, which is the file name apk opens in
// /etc/apk/keys (apk-protocol.md §5): anything abuild makes, such as
// "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub", but never a
// path: no '/', no "..", no NUL or other control character, not starting
// with '.', and at most 255 bytes of UTF-8.
func ValidKeyName(what, s string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: %s %q: %s", artifact.ErrInvalid, what, s, why)
	}
	switch {
	case s == "":
		return fmt.Errorf("%w: empty %s", artifact.ErrInvalid, what)
	case len(s) > MaxKeyNameLength:
		return bad(fmt.Sprintf("longer than %d bytes", MaxKeyNameLength))
	case !utf8.ValidString(s):
		return bad("not UTF-8")
	case strings.ContainsRune(s, '/'):
		return bad("a file name, without '/'")
	case strings.Contains(s, ".."):
		return bad(`contains ".."`)
	case s[0] == '.':
		return bad("starts with '.'")
	case strings.ContainsFunc(s, unicode.IsControl):
		return bad("contains a control character")
	case !strings.HasSuffix(s, KeySuffix) || len(s) == len(KeySuffix):
		return bad("apk finds keys by the exact name the index signature names, <name>" + KeySuffix + " as abuild makes them")
	}
	return nil
}

// KeyInfo is what the API shows of a registered key.
type KeyInfo struct {
	Name string `json:"name"`
	// Fingerprint is the SHA-256 of the key's DER encoding, in hex.
	Fingerprint string    `json:"fingerprint"`
	CreatedAt   time.Time `json:"created_at"`
}

type storedKey struct {
	KeyInfo
	// PEM is kept as registered, byte for byte: instances install it.
	PEM string `json:"pem"`
}

// AppSettings is an app's stored settings and trusted keys.
type AppSettings struct {
	// AllowUnsigned lets an unsigned index be published.
	AllowUnsigned bool        `json:"allow_unsigned"`
	Keys          []storedKey `json:"keys"`
	// Retention is the app's own retention policy over the server's.
	Retention RetentionSettings `json:"retention,omitzero"`
}

// RetentionSettings is an app's retention policy; a nil field takes the
// server's default.
type RetentionSettings struct {
	KeepBuilds     *int           `json:"keep_builds,omitempty"`
	KeepAge        *time.Duration `json:"keep_age,omitempty"`
	KeepOperations *int           `json:"keep_operations,omitempty"`
}

// SetRetention changes the fields of the app's retention policy that r
// sets; the others stay.
func (k *Keys) SetRetention(ctx context.Context, app artifact.App, r RetentionSettings) (AppSettings, error) {
	return k.update(ctx, app, func(s *AppSettings, _ bool) (bool, error) {
		cur := &s.Retention
		cur.KeepBuilds = cmp.Or(r.KeepBuilds, cur.KeepBuilds)
		cur.KeepAge = cmp.Or(r.KeepAge, cur.KeepAge)
		cur.KeepOperations = cmp.Or(r.KeepOperations, cur.KeepOperations)
		return true, nil
	})
}

// Infos lists the keys without their PEM, sorted by name.
func (s *AppSettings) Infos() []KeyInfo {
	out := make([]KeyInfo, 0, len(s.Keys))
	for _, k := range s.Keys {
		out = append(out, k.KeyInfo)
	}
	return out
}

// Names lists the key names, sorted.
func (s *AppSettings) Names() []string {
	out := make([]string, 0, len(s.Keys))
	for _, k := range s.Keys {
		out = append(out, k.Name)
	}
	return out
}

func (s *AppSettings) find(name string) int {
	return slices.IndexFunc(s.Keys, func(k storedKey) bool { return k.Name == name })
}

// Keys keeps every app's settings and trusted keys in storage, one object
// per app, so that a publish reads them in one go and the key count is
// checked atomically.
type Keys struct {
	d   storage.Driver
	now func() time.Time
}

// NewKeys returns the key store on d.
func NewKeys(d storage.Driver) *Keys { return &Keys{d: d, now: time.Now} }

func settingsKey(app artifact.App) string { return "meta/app-settings/" + app.Org + "/" + app.Name }

// Settings returns an app's settings; found is false when nothing was
// ever stored for it (the defaults are returned then).
func (k *Keys) Settings(ctx context.Context, app artifact.App) (s AppSettings, found bool, err error) {
	if err := app.Validate(); err != nil {
		return AppSettings{}, false, err
	}
	_, err = storage.ReadJSON(ctx, k.d, settingsKey(app), &s)
	if storage.IsNotFound(err) {
		return AppSettings{}, false, nil
	}
	if err != nil {
		return AppSettings{}, false, err
	}
	return s, true, nil
}

func (k *Keys) update(ctx context.Context, app artifact.App, fn func(s *AppSettings, exists bool) (bool, error)) (AppSettings, error) {
	if err := app.Validate(); err != nil {
		return AppSettings{}, err
	}
	var out AppSettings
	err := storage.UpdateJSON(ctx, k.d, settingsKey(app), func(cur *AppSettings, exists bool) (bool, error) {
		if cur.Keys == nil {
			cur.Keys = []storedKey{}
		}
		write, err := fn(cur, exists)
		out = *cur
		return write, err
	})
	return out, err
}

// SetAllowUnsigned changes whether the app accepts unsigned indexes.
func (k *Keys) SetAllowUnsigned(ctx context.Context, app artifact.App, allow bool) (AppSettings, error) {
	return k.update(ctx, app, func(s *AppSettings, exists bool) (bool, error) {
		if exists && s.AllowUnsigned == allow {
			return false, nil
		}
		s.AllowUnsigned = allow
		return true, nil
	})
}

// ParseKeyPEM checks a key as apk-tools loads it (one "BEGIN PUBLIC KEY"
// RSA block) and that the text holds nothing else but whitespace, so that
// what is served to instances is exactly that key. It returns the
// fingerprint: the SHA-256 of the DER, in hex.
func ParseKeyPEM(b []byte) (string, error) {
	invalid := func(why string) (string, error) {
		return "", fmt.Errorf("%w: public key: %s", artifact.ErrInvalid, why)
	}
	if len(b) > MaxKeySize {
		return invalid(fmt.Sprintf("larger than %d bytes", MaxKeySize))
	}
	for _, c := range b {
		if (c < 0x20 || c > 0x7e) && c != '\n' && c != '\r' && c != '\t' {
			return invalid("not PEM text: a byte outside printable ASCII")
		}
	}
	if !bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("-----BEGIN ")) {
		return invalid(`want one PEM block "-----BEGIN PUBLIC KEY-----" and nothing before it`)
	}
	if _, err := artifact.ParsePublicKey(b); err != nil {
		return invalid(err.Error())
	}
	block, _ := pem.Decode(b)
	sum := sha256.Sum256(block.Bytes)
	return hex.EncodeToString(sum[:]), nil
}

// Put registers (created) or replaces a key. The same PEM again changes
// nothing.
func (k *Keys) Put(ctx context.Context, app artifact.App, name string, pemBytes []byte) (KeyInfo, bool, error) {
	if err := ValidKeyName("key name", name); err != nil {
		return KeyInfo{}, false, err
	}
	fp, err := ParseKeyPEM(pemBytes)
	if err != nil {
		return KeyInfo{}, false, err
	}
	var info KeyInfo
	var created bool
	_, err = k.update(ctx, app, func(s *AppSettings, _ bool) (bool, error) {
		created = false
		i := s.find(name)
		if i >= 0 && s.Keys[i].PEM == string(pemBytes) {
			info = s.Keys[i].KeyInfo
			return false, nil
		}
		if i < 0 && len(s.Keys) >= MaxKeys {
			return false, fmt.Errorf("%w: app %s already trusts %d keys, the most it may; remove one first", artifact.ErrInvalid, app, MaxKeys)
		}
		info = KeyInfo{Name: name, Fingerprint: fp, CreatedAt: k.now().UTC()}
		sk := storedKey{KeyInfo: info, PEM: string(pemBytes)}
		if i >= 0 {
			s.Keys[i] = sk
		} else {
			created = true
			s.Keys = append(s.Keys, sk)
			slices.SortFunc(s.Keys, func(a, b storedKey) int { return strings.Compare(a.Name, b.Name) })
		}
		return true, nil
	})
	return info, created, err
}

func keyNotFound(app artifact.App, name string) error {
	return &ref.NotFoundError{What: "key " + name + " of " + app.String()}
}

// Delete removes a key; an unknown one is a ref.ErrNotFound.
func (k *Keys) Delete(ctx context.Context, app artifact.App, name string) error {
	if err := ValidKeyName("key name", name); err != nil {
		return err
	}
	_, err := k.update(ctx, app, func(s *AppSettings, _ bool) (bool, error) {
		i := s.find(name)
		if i < 0 {
			return false, keyNotFound(app, name)
		}
		s.Keys = slices.Delete(s.Keys, i, i+1)
		return true, nil
	})
	return err
}

// PEM returns a key exactly as registered; an unknown one is a
// ref.ErrNotFound.
func (k *Keys) PEM(ctx context.Context, app artifact.App, name string) ([]byte, error) {
	s, _, err := k.Settings(ctx, app)
	if err != nil {
		return nil, err
	}
	i := s.find(name)
	if i < 0 {
		return nil, keyNotFound(app, name)
	}
	return []byte(s.Keys[i].PEM), nil
}

// Names lists the names of an app's keys, sorted.
func (k *Keys) Names(ctx context.Context, app artifact.App) ([]string, error) {
	s, _, err := k.Settings(ctx, app)
	if err != nil {
		return nil, err
	}
	return s.Names(), nil
}

// Trusted returns an app's keys by name, parsed, and whether it allows
// unsigned indexes.
func (k *Keys) Trusted(ctx context.Context, app artifact.App) (map[string]*rsa.PublicKey, bool, error) {
	s, _, err := k.Settings(ctx, app)
	if err != nil {
		return nil, false, err
	}
	keys := make(map[string]*rsa.PublicKey, len(s.Keys))
	for _, sk := range s.Keys {
		pub, err := artifact.ParsePublicKey([]byte(sk.PEM))
		if err != nil { // checked when registered: the stored object was altered
			return nil, false, fmt.Errorf("stored key %s of %s: %w", sk.Name, app, err)
		}
		keys[sk.Name] = pub
	}
	return keys, s.AllowUnsigned, nil
}

// RegisterKeys serves an app's keys to instances, under the same access
// rules as the repositories:
//
//	GET|HEAD /keys/<org>/<app>/<name>   the PEM, byte for byte as registered
//	GET|HEAD /keys/<org>/<app>/         the names, one per line
//
// so that `wget -P /etc/apk/keys http://uplink:4080/keys/<org>/<app>/<name>`
// installs a key under the name apk looks it up by.
func (h *Handler) RegisterKeys(e *echo.Echo) {
	e.Any(KeysPrefix+"*", h.serveKey)
}

func (h *Handler) serveKey(c echo.Context) error {
	w, r := c.Response(), c.Request()
	addr, ok := h.admit(w, r)
	if !ok {
		return nil
	}
	app, name, err := parseKeyPath(r.URL.EscapedPath()[len(KeysPrefix):])
	if err != nil {
		plain(w, http.StatusBadRequest, err.Error())
		return nil
	}
	s, found, err := h.p.Keys(r.Context(), app, addr)
	if err != nil {
		h.fail(w, r, err, "")
		return nil
	}
	if !found || name == "" && len(s.Keys) == 0 {
		plain(w, http.StatusNotFound, "no keys registered for "+app.String())
		return nil
	}
	var body []byte
	var modified time.Time
	if name == "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		body = []byte(strings.Join(s.Names(), "\n") + "\n")
	} else {
		i := s.find(name)
		if i < 0 {
			plain(w, http.StatusNotFound, "no key "+name+" registered for "+app.String())
			return nil
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		body, modified = []byte(s.Keys[i].PEM), s.Keys[i].CreatedAt
	}
	// A key can be replaced under the same name: always revalidate.
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	limitRanges(r, int64(len(body)), h.cfg.MaxRanges)
	http.ServeContent(w, r, "", modified, bytes.NewReader(body))
	return nil
}

// parseKeyPath parses "<org>/<app>/<name>" or "<org>/<app>/" (escaped);
// name is empty for the listing. Each segment is unescaped on its own, so
// an encoded '/' can never smuggle a path into a name.
func parseKeyPath(escaped string) (artifact.App, string, error) {
	parts := strings.Split(escaped, "/")
	if len(parts) == 2 {
		parts = append(parts, "")
	}
	if len(parts) != 3 {
		return artifact.App{}, "", fmt.Errorf("want %s<org>/<app>/<key name>", KeysPrefix)
	}
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return artifact.App{}, "", fmt.Errorf("bad escape in %q", p)
		}
		parts[i] = u
	}
	app := artifact.App{Org: parts[0], Name: parts[1]}
	if err := app.Validate(); err != nil {
		return artifact.App{}, "", err
	}
	if parts[2] != "" {
		if err := ValidKeyName("key name", parts[2]); err != nil {
			return artifact.App{}, "", err
		}
	}
	return app, parts[2], nil
}
