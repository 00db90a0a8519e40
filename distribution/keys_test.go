package distribution_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/storage"
	"github.com/uplinkhq/uplink/storage/filesystem"
)

const alpineKey = "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"

func newStore(t *testing.T) storage.Driver {
	t.Helper()
	d, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var acme = artifact.App{Org: "acme", Name: "hello"}

func TestValidKeyName(t *testing.T) {
	for _, ok := range []string{
		alpineKey,
		"acme-hello.rsa.pub",
		"ci+build@example.org-0123abcd.rsa.pub",
		"a.rsa.pub",
		strings.Repeat("k", 255-len(".rsa.pub")) + ".rsa.pub",
	} {
		if err := distribution.ValidKeyName("key name", ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{
		"",
		"a/b.rsa.pub",
		"../x.rsa.pub",
		"a..b.rsa.pub",
		"..",
		".",
		".hidden.rsa.pub",
		"nul\x00.rsa.pub",
		"tab\t.rsa.pub",
		"newline\n.rsa.pub",
		"del\x7f.rsa.pub",
		"c1\u0085.rsa.pub",
		"bad-utf8-\xff.rsa.pub",
		"key.pem",
		".rsa.pub",
		strings.Repeat("k", 256-len(".rsa.pub")) + ".rsa.pub",
	} {
		err := distribution.ValidKeyName("key name", bad)
		if !errors.Is(err, artifact.ErrInvalid) {
			t.Errorf("%q accepted (%v)", bad, err)
		}
	}
}

func TestParseKeyPEM(t *testing.T) {
	key := apktest.NewKey(t)
	good := key.PublicPEM()
	fp, err := distribution.ParseKeyPEM(good)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(good)
	if sum := sha256.Sum256(block.Bytes); fp != hex.EncodeToString(sum[:]) {
		t.Errorf("fingerprint %s is not the SHA-256 of the DER", fp)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	for what, b := range map[string][]byte{
		"empty":             nil,
		"not PEM":           []byte("ssh-rsa AAAA"),
		"PKCS#1":            pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&key.Private.PublicKey)}),
		"EC key":            pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER}),
		"text before":       append([]byte("hello\n"), good...),
		"two keys":          append(append([]byte{}, good...), good...),
		"binary before":     append([]byte{0xff, '\n'}, good...),
		"larger than limit": append(append([]byte{}, good...), make([]byte, distribution.MaxKeySize)...),
	} {
		if _, err := distribution.ParseKeyPEM(b); !errors.Is(err, artifact.ErrInvalid) {
			t.Errorf("%s: accepted (%v)", what, err)
		}
	}
}

func TestKeysStore(t *testing.T) {
	ctx := t.Context()
	keys := distribution.NewKeys(newStore(t))
	a, b := apktest.NewKey(t), apktest.GenerateKey(t)
	pemA := append([]byte("\n"), a.PublicPEM()...) // leading whitespace is kept as sent

	info, created, err := keys.Put(ctx, acme, alpineKey, pemA)
	if err != nil || !created || info.Name != alpineKey || info.CreatedAt.IsZero() {
		t.Fatalf("first put: %+v created=%v %v", info, created, err)
	}
	if _, created, err := keys.Put(ctx, acme, alpineKey, pemA); err != nil || created {
		t.Fatalf("same key again: created=%v %v", created, err)
	}
	got, err := keys.PEM(ctx, acme, alpineKey)
	if err != nil || string(got) != string(pemA) {
		t.Fatalf("PEM: %q %v, want the bytes registered", got, err)
	}
	// Replacing under the same name.
	replaced, created, err := keys.Put(ctx, acme, alpineKey, b.PublicPEM())
	if err != nil || created || replaced.Fingerprint == info.Fingerprint {
		t.Fatalf("replace: %+v created=%v %v", replaced, created, err)
	}
	if _, _, err := keys.Put(ctx, acme, "z-"+a.Name, a.PublicPEM()); err != nil {
		t.Fatal(err)
	}
	names, err := keys.Names(ctx, acme)
	if err != nil || strings.Join(names, ",") != alpineKey+",z-"+a.Name {
		t.Fatalf("names %v %v", names, err)
	}
	trusted, allow, err := keys.Trusted(ctx, acme)
	if err != nil || len(trusted) != 2 || allow || !trusted[alpineKey].Equal(&b.Private.PublicKey) {
		t.Fatalf("trusted %v allow=%v %v", trusted, allow, err)
	}
	if err := keys.Delete(ctx, acme, alpineKey); err != nil {
		t.Fatal(err)
	}
	if err := keys.Delete(ctx, acme, alpineKey); !errors.Is(err, ref.ErrNotFound) {
		t.Fatalf("deleting twice: %v, want not found", err)
	}
	if _, err := keys.PEM(ctx, acme, alpineKey); !errors.Is(err, ref.ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
	// Another app shares nothing.
	if n, err := keys.Names(ctx, artifact.App{Org: "acme", Name: "other"}); err != nil || len(n) != 0 {
		t.Fatalf("other app: %v %v", n, err)
	}
	s, err := keys.SetAllowUnsigned(ctx, acme, true)
	if err != nil || !s.AllowUnsigned || len(s.Keys) != 1 {
		t.Fatalf("allow unsigned: %+v %v", s, err)
	}
	if _, allow, _ := keys.Trusted(ctx, acme); !allow {
		t.Fatal("allow_unsigned not kept")
	}
}

func TestKeysBounded(t *testing.T) {
	ctx := t.Context()
	keys := distribution.NewKeys(newStore(t))
	pemA := apktest.NewKey(t).PublicPEM()
	for i := range distribution.MaxKeys {
		if _, _, err := keys.Put(ctx, acme, fmt.Sprintf("k%02d.rsa.pub", i), pemA); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := keys.Put(ctx, acme, "one-too-many.rsa.pub", pemA); !errors.Is(err, artifact.ErrInvalid) {
		t.Fatalf("key %d: %v, want refused", distribution.MaxKeys+1, err)
	}
	// Replacing one is still fine.
	if _, _, err := keys.Put(ctx, acme, "k00.rsa.pub", apktest.GenerateKey(t).PublicPEM()); err != nil {
		t.Fatalf("replacing at the limit: %v", err)
	}
}

func serveKeys(t *testing.T, allow ...netip.Prefix) (*echo.Echo, *distribution.Keys) {
	t.Helper()
	keys := distribution.NewKeys(newStore(t))
	e := echo.New()
	p := &distribution.Repositories{KeyStore: keys}
	distribution.New(distribution.Config{Protocol: distribution.NewAccess(p, allow, nil)}).RegisterKeys(e)
	return e, keys
}

func fetch(e *echo.Echo, method, target string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	req.RemoteAddr = "127.0.0.1:4321"
	w := httptest.NewRecorder()
	e.ServeHTTP(w, req)
	return w
}

func TestServeKeys(t *testing.T) {
	e, keys := serveKeys(t)
	pemA := apktest.NewKey(t).PublicPEM()
	if w := fetch(e, http.MethodGet, "/keys/acme/hello/"); w.Code != http.StatusNotFound {
		t.Fatalf("no keys yet: %d", w.Code)
	}
	if _, _, err := keys.Put(t.Context(), acme, alpineKey, pemA); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"/keys/acme/hello/" + alpineKey, "/keys/acme/hello/alpine-devel%40lists.alpinelinux.org-6165ee59.rsa.pub"} {
		w := fetch(e, http.MethodGet, target)
		if w.Code != http.StatusOK || w.Body.String() != string(pemA) || w.Header().Get("Content-Type") != "application/x-pem-file" {
			t.Fatalf("GET %s: %d %q %q", target, w.Code, w.Header().Get("Content-Type"), w.Body.String())
		}
	}
	if w := fetch(e, http.MethodHead, "/keys/acme/hello/"+alpineKey); w.Code != http.StatusOK || w.Body.Len() != 0 {
		t.Fatalf("HEAD: %d, %d body bytes", w.Code, w.Body.Len())
	}
	if w := fetch(e, http.MethodGet, "/keys/acme/hello/"); w.Code != http.StatusOK || w.Body.String() != alpineKey+"\n" {
		t.Fatalf("list: %d %q", w.Code, w.Body.String())
	}
	for target, status := range map[string]int{
		"/keys/acme/hello/other.rsa.pub":         http.StatusNotFound,
		"/keys/acme/nope/" + alpineKey:           http.StatusNotFound,
		"/keys/acme/hello/a%2Fb.rsa.pub":         http.StatusBadRequest,
		"/keys/acme/hello/%2e%2e":                http.StatusBadRequest,
		"/keys/acme/hello/..%2F..%2Fetc.rsa.pub": http.StatusBadRequest,
		"/keys/acme/hello/nul%00.rsa.pub":        http.StatusBadRequest,
		"/keys/acme/hello/cr%0d.rsa.pub":         http.StatusBadRequest,
		"/keys/acme/hello/a/b.rsa.pub":           http.StatusBadRequest,
		"/keys/ac!me/hello/" + alpineKey:         http.StatusBadRequest,
		"/keys/acme":                             http.StatusBadRequest,
	} {
		if w := fetch(e, http.MethodGet, target); w.Code != status {
			t.Errorf("GET %s: %d, want %d (%s)", target, w.Code, status, w.Body.String())
		}
	}
	if w := fetch(e, http.MethodPut, "/keys/acme/hello/"+alpineKey); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d", w.Code)
	}

	// The allow-list of /distribution applies.
	e2, keys2 := serveKeys(t, netip.MustParsePrefix("10.0.0.0/8"))
	keys2.Put(t.Context(), acme, alpineKey, pemA)
	if w := fetch(e2, http.MethodGet, "/keys/acme/hello/"+alpineKey); w.Code != http.StatusForbidden {
		t.Fatalf("outside the allow-list: %d", w.Code)
	}
	// So does the per-app check (Incus leases): refused is 403, unable
	// to decide 503, and it is asked about the right app and client.
	auth := &authorizer{}
	e3 := echo.New()
	p := distribution.NewAccess(&distribution.Repositories{KeyStore: keys}, nil, auth)
	distribution.New(distribution.Config{Protocol: p}).RegisterKeys(e3)
	for _, tc := range []struct {
		verdict verdict
		status  int
	}{{allow, http.StatusOK}, {refuse, http.StatusForbidden}, {undecided, http.StatusServiceUnavailable}} {
		auth.verdict = tc.verdict
		if w := fetch(e3, http.MethodGet, "/keys/acme/hello/"+alpineKey); w.Code != tc.status || auth.app != acme {
			t.Errorf("authorize %v: %d for %v, want %d", tc.verdict, w.Code, auth.app, tc.status)
		}
	}
}
