package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/uplinkhq/uplink/internal/apkfile"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/server"
)

// refusal is a 422 of a publish.
type refusal struct {
	Error struct {
		Code     string `json:"code"`
		Message  string `json:"message"`
		Problems []struct {
			Arch    string `json:"arch"`
			File    string `json:"file"`
			Kind    string `json:"kind"`
			Problem string `json:"problem"`
		} `json:"problems"`
	} `json:"error"`
}

// uploadAll uploads files ("<arch>/<file>") under commit, each expected
// to answer one of ok.
func uploadAll(t *testing.T, n *node, commit string, files map[string][]byte, ok ...int) {
	t.Helper()
	if len(ok) == 0 {
		ok = []int{http.StatusCreated, http.StatusOK}
	}
	for p, b := range files {
		arch, name, _ := strings.Cut(p, "/")
		if r := admAuthed(t, http.MethodPut, admUploadURL(n, commit, arch, name), b); !slices.Contains(ok, r.status) {
			t.Fatalf("upload %s: %d %s, want one of %v", p, r.status, r.body, ok)
		}
	}
}

func publishRaw(t *testing.T, n *node, commit, branch string) admResult {
	t.Helper()
	return admAuthed(t, http.MethodPost, admAdmin(n)+"/api/v1/apps/"+testApp+"/builds", admPublishBody(t, commit, branch))
}

// wantRefused checks a publish was refused with code, each problem naming
// one of files and the message saying each of says.
func wantRefused(t *testing.T, what string, r admResult, code string, files []string, says ...string) refusal {
	t.Helper()
	admWantError(t, what, r, http.StatusUnprocessableEntity, code)
	var ref refusal
	if err := json.Unmarshal(r.body, &ref); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ref.Error.Problems {
		got = append(got, p.File)
		if p.Arch == "" || p.Kind == "" || p.Problem == "" {
			t.Errorf("%s: incomplete problem %+v", what, p)
		}
	}
	if !slices.Equal(got, files) {
		t.Errorf("%s: problems name %v, want %v: %s", what, got, files, r.body)
	}
	for _, s := range says {
		if !strings.Contains(ref.Error.Message, s) {
			t.Errorf("%s: message %q does not say %q", what, ref.Error.Message, s)
		}
	}
	return ref
}

// TestPublishValidation: each refusal of a repository apk could not
// install, with its status and code; nothing moves, and the commit can be
// repaired and published afterwards.
func TestPublishValidation(t *testing.T) {
	drivers(t, func(t *testing.T, cfg server.Config) {
		n := start(t, cfg)
		key := apktest.GenerateKey(t)
		key.Name = abuildKeyName
		stranger := apktest.GenerateKey(t)
		const index, pkg = "x86_64/APKINDEX.tar.gz", "x86_64/hello-1.0-r0.apk"
		files := hello(t, key, "1.0-r0", "A")
		unsigned := apktest.SignIndex(t, files[index])

		// No keys yet: an unsigned index is refused, saying how to allow it.
		u := commitOf("unsigned")
		uploadAll(t, n, u, map[string][]byte{pkg: files[pkg], index: unsigned})
		wantRefused(t, "unsigned, allow_unsigned false", publishRaw(t, n, u, "main"), "signature", []string{index}, "unsigned", "allow_unsigned")

		// Keys registered: only they sign.
		if r := admAuthed(t, http.MethodPut, admKeyURL(n, key.Name), key.PublicPEM()); r.status != http.StatusCreated {
			t.Fatalf("register key: %d %s", r.status, r.body)
		}
		s := commitOf("stranger")
		byStranger := map[string][]byte{pkg: files[pkg], index: apktest.SignIndex(t, files[index], apktest.Signer{Key: stranger, Algorithm: "RSA"})}
		uploadAll(t, n, s, byStranger)
		wantRefused(t, "signed by an unregistered key", publishRaw(t, n, s, "main"), "signature", []string{index}, stranger.Name, key.Name)

		// The index lists a file the build lacks.
		m := commitOf("missing")
		uploadAll(t, n, m, map[string][]byte{index: files[index]})
		wantRefused(t, "missing package", publishRaw(t, n, m, "main"), "incomplete", []string{pkg}, pkg)

		// The wrong size.
		w := commitOf("size")
		uploadAll(t, n, w, map[string][]byte{index: files[index], pkg: append(bytes.Clone(files[pkg]), '\n')})
		wantRefused(t, "wrong size", publishRaw(t, n, w, "main"), "incomplete", []string{pkg}, pkg)

		// Same size, another control member: what a same-named rebuild is.
		c := commitOf("checksum")
		rebuilt := hello(t, key, "1.0-r0", "B")[pkg]
		if len(rebuilt) != len(files[pkg]) {
			rebuilt = sameSizeOtherControl(t, files[pkg])
		}
		uploadAll(t, n, c, map[string][]byte{index: files[index], pkg: rebuilt})
		wantRefused(t, "other control checksum", publishRaw(t, n, c, "main"), "incomplete", []string{pkg}, "checksum")

		// Nothing moved, nothing was recorded.
		if refs := admRefsOf(t, n); len(refs.Branches) != 0 {
			t.Fatalf("refused publishes moved refs: %+v", refs)
		}
		var apps struct{ Apps []any }
		admDecode(t, "apps", admAuthed(t, http.MethodGet, admAdmin(n)+"/api/v1/apps", nil), http.StatusOK, &apps)
		if len(apps.Apps) != 0 {
			t.Fatalf("refused publishes recorded an app: %+v", apps)
		}

		// Repaired: a refused commit is not immutable; fixed files replace
		// the bad ones (200, not 409), a new one is added (201).
		uploadAll(t, n, w, map[string][]byte{pkg: files[pkg]}, http.StatusOK)
		uploadAll(t, n, c, map[string][]byte{pkg: files[pkg]}, http.StatusOK)
		uploadAll(t, n, m, map[string][]byte{pkg: files[pkg]}, http.StatusCreated)
		uploadAll(t, n, s, map[string][]byte{index: files[index]}, http.StatusOK)
		for _, commit := range []string{w, c, m, s} {
			if r := publishRaw(t, n, commit, "main"); r.status != http.StatusCreated {
				t.Fatalf("publish of the repaired %s: %d %s", commit[:7], r.status, r.body)
			}
		}
		if got := installed(t, n.repo("main"), key); got != "A" {
			t.Fatalf("installed %q", got)
		}
		// Published now: immutable.
		admWantError(t, "upload to the published commit", admAuthed(t, http.MethodPut, admUploadURL(n, c, "x86_64", "hello-1.0-r0.apk"), rebuilt), http.StatusConflict, "immutable")

		// A published build publishes again (another branch) without
		// being read again: its files cannot change.
		if r := publishRaw(t, n, c, "release"); r.status != http.StatusCreated {
			t.Fatalf("publishing a published commit to another branch: %d %s", r.status, r.body)
		}

		// allow_unsigned: the unsigned index publishes.
		if r := admAuthed(t, http.MethodPatch, admAdmin(n)+"/api/v1/apps/"+testApp, []byte(`{"allow_unsigned":true}`)); r.status != http.StatusOK {
			t.Fatalf("PATCH: %d %s", r.status, r.body)
		}
		if r := publishRaw(t, n, u, "unsigned"); r.status != http.StatusCreated {
			t.Fatalf("unsigned index, allowed: %d %s", r.status, r.body)
		}
		resp, body := get(t, n.repo("unsigned")+"/"+index)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, unsigned) {
			t.Fatalf("the unsigned index is not served: %d", resp.StatusCode)
		}

		// No index at all: today's answer.
		none := commitOf("none")
		uploadAll(t, n, none, map[string][]byte{pkg: files[pkg]})
		admWantError(t, "no index", publishRaw(t, n, none, "main"), http.StatusUnprocessableEntity, "missing")
	})
}

// sameSizeOtherControl changes a package's control member (its gzip
// header's MTIME) and nothing else.
func sameSizeOtherControl(t *testing.T, apk []byte) []byte {
	members, err := apkfile.Members(apk)
	if err != nil {
		t.Fatal(err)
	}
	off := 0
	for _, m := range members[:apkfile.ControlMember(members)] {
		off += len(m)
	}
	out := bytes.Clone(apk)
	out[off+4] ^= 0xff
	return out
}
