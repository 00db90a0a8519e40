package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/server"
)

// abuildKeyName is how abuild-keygen names a key: <email>-<8 hex>.rsa.pub.
const abuildKeyName = "ci@acme.example-5f3e1a2b.rsa.pub"

// keysURL is the distribution listener's /keys/ of the test app.
func (n *node) keysURL() string {
	return strings.TrimSuffix(n.dist, "/distribution") + "/keys/" + testApp + "/"
}

func admKeyURL(n *node, escapedName string) string {
	return admAdmin(n) + "/api/v1/apps/" + testApp + "/keys/" + escapedName
}

type admKey struct {
	Name        string    `json:"name"`
	Fingerprint string    `json:"fingerprint"`
	CreatedAt   time.Time `json:"created_at"`
}

// TestKeysEndToEnd: an abuild-style key name with '@' works everywhere:
// registered before the first build, sent percent-encoded, served to
// instances byte for byte, trusted by the publish, installed from with
// go-apk, and named by an installation without its PEM.
func TestKeysEndToEnd(t *testing.T) {
	drivers(t, func(t *testing.T, cfg server.Config) {
		n := start(t, opsConfig(cfg))
		key := apktest.GenerateKey(t)
		key.Name = abuildKeyName
		// As CI sends it: a trailing newline and all.
		registered := key.PublicPEM()
		escaped := url.PathEscape(abuildKeyName)
		escaped = strings.ReplaceAll(escaped, "@", "%40") // as curl --data-urlencode or a browser would

		// Before the app has any build.
		var k admKey
		admDecode(t, "PUT key", admAuthed(t, http.MethodPut, admKeyURL(n, escaped), registered), http.StatusCreated, &k)
		if k.Name != abuildKeyName || len(k.Fingerprint) != 64 || k.CreatedAt.IsZero() {
			t.Fatalf("registered key: %+v", k)
		}
		admDecode(t, "PUT the same key again", admAuthed(t, http.MethodPut, admKeyURL(n, abuildKeyName), registered), http.StatusOK, &k)
		var list struct{ Keys []admKey }
		admDecode(t, "GET keys", admAuthed(t, http.MethodGet, admAdmin(n)+"/api/v1/apps/"+testApp+"/keys", nil), http.StatusOK, &list)
		if len(list.Keys) != 1 || list.Keys[0] != k {
			t.Fatalf("keys: %+v, want [%+v]", list.Keys, k)
		}

		// Served to instances, as `wget -P /etc/apk/keys <url>` fetches it.
		for _, name := range []string{abuildKeyName, escaped} {
			resp, body := get(t, n.keysURL()+name)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, registered) {
				t.Fatalf("GET /keys/.../%s: %d, byte-identical: %v", name, resp.StatusCode, bytes.Equal(body, registered))
			}
		}
		resp, body := get(t, n.keysURL())
		if resp.StatusCode != http.StatusOK || string(body) != abuildKeyName+"\n" {
			t.Fatalf("GET /keys/%s/: %d %q", testApp, resp.StatusCode, body)
		}

		// A repository signed under that name publishes and installs.
		a := commitOf("A")
		files := hello(t, key, "1.0-r0", "A")
		if first := apkFirstEntry(files["x86_64/APKINDEX.tar.gz"]); first != ".SIGN.RSA."+abuildKeyName {
			t.Fatalf("test setup: the index is signed as %q", first)
		}
		n.publish(t, a, "main", files)
		// go-apk installs trusting exactly the key /keys/ serves, under
		// the name it is served by.
		_, served := get(t, n.keysURL()+abuildKeyName)
		pub, err := artifact.ParsePublicKey(served)
		if err != nil || !pub.Equal(&key.Private.PublicKey) {
			t.Fatalf("the served key is not the signing key's public half: %v", err)
		}
		if got := installed(t, n.repo("main"), key); got != "A" {
			t.Fatalf("installed %q", got)
		}

		// An installation names the key alone.
		spec := webSpec(key, instance.Channel{Branch: "main"})
		spec.PublicKey = ""
		var v instance.View
		if err := n.api.JSON(t.Context(), http.MethodPut, "/api/v1/installations/web", spec, &v); err != nil {
			t.Fatalf("installation with key_name alone: %v", err)
		}
		if v.KeyName != abuildKeyName || v.PublicKey != string(registered) {
			t.Fatalf("installation: key_name %q, public_key filled from the registered key: %v", v.KeyName, v.PublicKey == string(registered))
		}
		if op := waitOp(t, n, v.LastOperation.ID, 20*time.Second); op.State != operation.Succeeded {
			t.Fatalf("the installation's first operation: %s %s", op.State, op.Error)
		}
		spec.KeyName = "someone-else@acme.example-00000000.rsa.pub"
		err = n.api.JSON(t.Context(), http.MethodPut, "/api/v1/installations/web2", spec, &v)
		var ce *client.Error
		if !asClientError(err, &ce) || ce.Status != http.StatusUnprocessableEntity || !strings.Contains(ce.Message, abuildKeyName) || !strings.Contains(ce.Message, spec.KeyName) {
			t.Fatalf("key_name not registered: %v, want 422 naming it and the registered key", err)
		}

		var app struct {
			App           string   `json:"app"`
			AllowUnsigned bool     `json:"allow_unsigned"`
			Keys          []admKey `json:"keys"`
		}
		admDecode(t, "GET app", admAuthed(t, http.MethodGet, admAdmin(n)+"/api/v1/apps/"+testApp, nil), http.StatusOK, &app)
		if app.App != testApp || app.AllowUnsigned || len(app.Keys) != 1 || app.Keys[0].Name != abuildKeyName {
			t.Fatalf("app: %+v", app)
		}

		// Removed: gone from the listing and from /keys/.
		if r := admAuthed(t, http.MethodDelete, admKeyURL(n, escaped), nil); r.status != http.StatusNoContent {
			t.Fatalf("DELETE: %d %s", r.status, r.body)
		}
		admWantError(t, "DELETE again", admAuthed(t, http.MethodDelete, admKeyURL(n, escaped), nil), http.StatusNotFound, "not_found")
		if resp, _ := get(t, n.keysURL()+abuildKeyName); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("removed key served: %d", resp.StatusCode)
		}
	})
}

// apkFirstEntry is the name of an index's signature entry.
func apkFirstEntry(index []byte) string {
	sigs, _, err := artifact.ReadSignatures(index)
	if err != nil || len(sigs) == 0 {
		return ""
	}
	return ".SIGN." + sigs[0].Algorithm + "." + sigs[0].KeyName
}

// TestKeyValidation: bad names and bad keys are 400 (413 when too large),
// never stored.
func TestKeyValidation(t *testing.T) {
	n := start(t, baseConfig(t))
	pemBytes := apktest.NewKey(t).PublicPEM()
	for _, tc := range []struct {
		what, name string
		body       []byte
		status     int
	}{
		{"slash", "a%2Fb.rsa.pub", pemBytes, 400},
		{"dot dot", "..%2Fx.rsa.pub", pemBytes, 400},
		{"dot dot alone", "%2E%2E", pemBytes, 400},
		{"dots inside", "a..b.rsa.pub", pemBytes, 400},
		{"NUL", "a%00.rsa.pub", pemBytes, 400},
		{"control character", "a%01b.rsa.pub", pemBytes, 400},
		{"newline", "a%0Ab.rsa.pub", pemBytes, 400},
		{"leading dot", ".hidden.rsa.pub", pemBytes, 400},
		{"no .rsa.pub", "key.pem", pemBytes, 400},
		{"too long", strings.Repeat("k", 250) + ".rsa.pub", pemBytes, 400},
		{"not a key", "ok.rsa.pub", []byte("ssh-rsa AAAA"), 400},
		{"empty", "ok.rsa.pub", []byte{}, 400},
		{"PKCS#1", "ok.rsa.pub", bytes.Replace(bytes.Replace(pemBytes, []byte("BEGIN PUBLIC"), []byte("BEGIN RSA PUBLIC"), 1), []byte("END PUBLIC"), []byte("END RSA PUBLIC"), 1), 400},
		{"too large", "ok.rsa.pub", bytes.Repeat([]byte("A"), 1<<20), 413},
	} {
		admWantError(t, tc.what, admAuthed(t, http.MethodPut, admKeyURL(n, tc.name), tc.body), tc.status, "")
	}
	var list struct{ Keys []admKey }
	admDecode(t, "GET keys", admAuthed(t, http.MethodGet, admAdmin(n)+"/api/v1/apps/"+testApp+"/keys", nil), http.StatusOK, &list)
	if list.Keys == nil || len(list.Keys) != 0 {
		t.Fatalf("refused keys were stored: %+v", list.Keys)
	}
	// '@' and '+' are fine.
	for _, name := range []string{"a@b.rsa.pub", "a+b@c-0123abcd.rsa.pub", "a%40b%2Bc.rsa.pub"} {
		if r := admAuthed(t, http.MethodPut, admKeyURL(n, name), pemBytes); r.status != http.StatusCreated {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	admDecode(t, "GET keys", admAuthed(t, http.MethodGet, admAdmin(n)+"/api/v1/apps/"+testApp+"/keys", nil), http.StatusOK, &list)
	var names []string
	for _, k := range list.Keys {
		names = append(names, k.Name)
	}
	if strings.Join(names, " ") != "a+b@c-0123abcd.rsa.pub a@b+c.rsa.pub a@b.rsa.pub" {
		t.Fatalf("names %q", names)
	}
	// The distribution listener refuses bad names too.
	for _, p := range []string{"a%2Fb.rsa.pub", "%2E%2E", "a%00.rsa.pub"} {
		if resp, _ := get(t, n.keysURL()+p); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET /keys/.../%s: %d", p, resp.StatusCode)
		}
	}
	// An unknown app has no settings; a bad PATCH is 400.
	admWantError(t, "GET unknown app", admAuthed(t, http.MethodGet, admAdmin(n)+"/api/v1/apps/acme/nope", nil), http.StatusNotFound, "not_found")
	admWantError(t, "PATCH nothing", admAuthed(t, http.MethodPatch, admAdmin(n)+"/api/v1/apps/"+testApp, []byte(`{}`)), http.StatusBadRequest, "")
	admWantError(t, "PATCH unknown field", admAuthed(t, http.MethodPatch, admAdmin(n)+"/api/v1/apps/"+testApp, []byte(`{"allow_unsigend":true}`)), http.StatusBadRequest, "bad_json")
	var app struct {
		AllowUnsigned bool `json:"allow_unsigned"`
	}
	body, _ := json.Marshal(map[string]bool{"allow_unsigned": true})
	admDecode(t, "PATCH", admAuthed(t, http.MethodPatch, admAdmin(n)+"/api/v1/apps/"+testApp, body), http.StatusOK, &app)
	if !app.AllowUnsigned {
		t.Fatal("allow_unsigned not set")
	}
}
