package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/server"
)

// admResult is one answer of the admin listener.
type admResult struct {
	status int
	header http.Header
	body   []byte
}

// admError is the error shape of API.md.
type admError struct {
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// admAdmin is the base URL of n's admin listener.
func admAdmin(n *node) string { return "http://" + n.srv.AdminAddr() }

// admDo sends one request to url with the given Authorization header
// (none when auth is empty) and body (none when nil).
func admDo(t *testing.T, method, url, auth string, body []byte) admResult {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != nil && method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, url, err)
	}
	return admResult{status: resp.StatusCode, header: resp.Header, body: b}
}

// admAuthed sends a request with the test token.
func admAuthed(t *testing.T, method, url string, body []byte) admResult {
	t.Helper()
	return admDo(t, method, url, "Bearer "+testToken, body)
}

// admWantError checks r is an API error with status and, when code is
// not empty, that code; it returns the message.
func admWantError(t *testing.T, what string, r admResult, status int, code string) string {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d; body %s", what, r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want JSON", what, ct)
	}
	var e admError
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == nil {
		t.Fatalf("%s: body is not {\"error\":{...}}: %v: %s", what, err, r.body)
	}
	if e.Error.Code == "" || e.Error.Message == "" {
		t.Errorf("%s: error without code or message: %s", what, r.body)
	}
	if code != "" && e.Error.Code != code {
		t.Errorf("%s: code %q, want %q (message %q)", what, e.Error.Code, code, e.Error.Message)
	}
	if strings.Contains(string(r.body), "goroutine ") || strings.Contains(string(r.body), ".go:") {
		t.Errorf("%s: the answer looks like a stack trace: %s", what, r.body)
	}
	return e.Error.Message
}

// admUploadURL is where a file of testApp's commit is uploaded.
func admUploadURL(n *node, commit, arch, file string) string {
	return admAdmin(n) + "/api/v1/apps/" + testApp + "/builds/" + commit + "/" + arch + "/" + file
}

// admPublishBody is the JSON of a publish request.
func admPublishBody(t *testing.T, commit, branch string, tags ...string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"commit": commit, "branch": branch, "tags": tags})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type admBuild struct {
	Commit      string    `json:"commit"`
	Branch      string    `json:"branch"`
	Tags        []string  `json:"tags"`
	Archs       []string  `json:"archs"`
	Message     string    `json:"message"`
	PublishedAt time.Time `json:"published_at"`
}

type admPointer struct {
	Commit    string    `json:"commit"`
	UpdatedAt time.Time `json:"updated_at"`
}

type admRefs struct {
	Branches map[string]admPointer `json:"branches"`
	Tags     map[string]admPointer `json:"tags"`
}

func admDecode(t *testing.T, what string, r admResult, status int, v any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d; body %s", what, r.status, status, r.body)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("%s: decoding %s: %v", what, r.body, err)
	}
}

func admBuilds(t *testing.T, n *node, query string) []admBuild {
	t.Helper()
	var out struct {
		Builds []admBuild `json:"builds"`
	}
	admDecode(t, "builds?"+query, admAuthed(t, http.MethodGet, admAdmin(n)+"/api/v1/apps/"+testApp+"/builds?"+query, nil), http.StatusOK, &out)
	if out.Builds == nil {
		t.Fatalf("builds?%s: no \"builds\" list", query)
	}
	return out.Builds
}

func admCommits(builds []admBuild) []string {
	var out []string
	for _, b := range builds {
		out = append(out, b.Commit)
	}
	return out
}

func admRefsOf(t *testing.T, n *node) admRefs {
	t.Helper()
	var refs admRefs
	admDecode(t, "refs", admAuthed(t, http.MethodGet, admAdmin(n)+"/api/v1/apps/"+testApp+"/refs", nil), http.StatusOK, &refs)
	return refs
}

// TestAdminAuth: every route under /api/v1, known or not, refuses a
// missing or wrong token with 401, the error shape and a challenge; the
// health and metrics endpoints need no token.
func TestAdminAuth(t *testing.T) {
	n := start(t, baseConfig(t))
	a := commitOf("auth")
	n.publish(t, a, "main", hello(t, apktest.NewKey(t), "1.0-r0", "A"))
	base := admAdmin(n)

	routes := []struct{ method, path string }{
		{http.MethodGet, "/api/v1/apps"},
		{http.MethodPut, "/api/v1/apps/" + testApp + "/builds/" + commitOf("new") + "/x86_64/hello-1.0-r0.apk"},
		{http.MethodPost, "/api/v1/apps/" + testApp + "/builds"},
		{http.MethodGet, "/api/v1/apps/" + testApp + "/builds"},
		{http.MethodGet, "/api/v1/apps/" + testApp + "/builds?branch=main"},
		{http.MethodGet, "/api/v1/apps/" + testApp + "/refs"},
		{http.MethodGet, "/api/v1/installations"},
		{http.MethodGet, "/api/v1/installations/web"},
		{http.MethodPut, "/api/v1/installations/web"},
		{http.MethodDelete, "/api/v1/installations/web"},
		{http.MethodPut, "/api/v1/installations/web/channel"},
		{http.MethodGet, "/api/v1/installations/web/history"},
		{http.MethodGet, "/api/v1/operations?installation=web"},
		{http.MethodGet, "/api/v1/operations/web.1"},
		{http.MethodGet, "/api/v1/operations/web.1/events"},
		{http.MethodGet, "/api/v1/no/such/endpoint"},
		{http.MethodDelete, "/api/v1/apps"}, // known path, unknown method
		{http.MethodGet, "/api/v1"},
		{http.MethodGet, "/api/v1/"},
	}
	auths := map[string]string{
		"no token":         "",
		"wrong token":      "Bearer wrong-token-0123456789abcdef",
		"token prefix":     "Bearer " + testToken[:len(testToken)-1],
		"token and more":   "Bearer " + testToken + "x",
		"empty bearer":     "Bearer ",
		"bare token":       testToken,
		"basic scheme":     "Basic " + testToken,
		"basic user:token": "Basic dXBsaW5rOnRlc3QtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg==",
	}
	for _, r := range routes {
		for name, auth := range auths {
			var body []byte
			switch r.method {
			case http.MethodPost:
				body = admPublishBody(t, commitOf("new"), "evil")
			case http.MethodPut:
				body = []byte("not a package")
			}
			what := r.method + " " + r.path + " with " + name
			res := admDo(t, r.method, base+r.path, auth, body)
			admWantError(t, what, res, http.StatusUnauthorized, "unauthorized")
			if c := res.header.Get("WWW-Authenticate"); !strings.HasPrefix(c, "Bearer") {
				t.Errorf("%s: WWW-Authenticate %q, want a Bearer challenge", what, c)
			}
		}
	}

	// Nothing of the refused writes happened.
	builds := admBuilds(t, n, "")
	if got := admCommits(builds); !slices.Equal(got, []string{a}) {
		t.Fatalf("after refused writes, builds are %v, want only %s", got, a)
	}
	if _, ok := admRefsOf(t, n).Branches["evil"]; ok {
		t.Fatal("a refused publish moved a branch")
	}

	// The right token works, with either spelling of the scheme.
	for _, auth := range []string{"Bearer " + testToken, "bearer " + testToken} {
		if res := admDo(t, http.MethodGet, base+"/api/v1/apps", auth, nil); res.status != http.StatusOK {
			t.Fatalf("GET /api/v1/apps with %q: %d %s", auth, res.status, res.body)
		}
	}
	// An unknown endpoint with the right token is a JSON 404, not a 401.
	admWantError(t, "unknown endpoint with token", admAuthed(t, http.MethodGet, base+"/api/v1/no/such/endpoint", nil), http.StatusNotFound, "")

	// Health and metrics need no token.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		res := admDo(t, http.MethodGet, base+p, "", nil)
		if res.status != http.StatusOK {
			t.Fatalf("GET %s without a token: %d %s", p, res.status, res.body)
		}
	}
	if res := admDo(t, http.MethodGet, base+"/metrics", "", nil); !strings.Contains(string(res.body), "uplink_") {
		t.Fatalf("/metrics holds no uplink_ metric:\n%.2000s", res.body)
	}
}

// TestAdminGeneratedToken: without configured tokens, the server generates
// one into <data-dir>/admin-token (0600), accepts it, and keeps it across
// restarts.
func TestAdminGeneratedToken(t *testing.T) {
	cfg := baseConfig(t)
	cfg.AdminTokens = nil
	path := filepath.Join(cfg.DataDir, server.TokenFile)
	if _, err := os.Stat(path); err == nil {
		t.Fatal("token file exists before the first start")
	}

	n := start(t, cfg)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("no generated token file: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("token file mode %v, want 0600", perm)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))
	if len(token) < 32 {
		t.Fatalf("generated token %q is too short to be secret", token)
	}
	if res := admDo(t, http.MethodGet, admAdmin(n)+"/api/v1/apps", "Bearer "+token, nil); res.status != http.StatusOK {
		t.Fatalf("generated token refused: %d %s", res.status, res.body)
	}
	// The test token of the other tests is not accepted here, nor is an
	// empty one.
	admWantError(t, "a token that is not configured", admDo(t, http.MethodGet, admAdmin(n)+"/api/v1/apps", "Bearer "+testToken, nil), http.StatusUnauthorized, "")
	admWantError(t, "an empty token", admDo(t, http.MethodGet, admAdmin(n)+"/api/v1/apps", "Bearer ", nil), http.StatusUnauthorized, "")
	n.cancel()

	// Restart on the same data directory: same token, file untouched.
	n2 := start(t, cfg)
	raw2, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw2) != string(raw) {
		t.Fatalf("restart changed the token file: %q, then %q", raw, raw2)
	}
	if res := admDo(t, http.MethodGet, admAdmin(n2)+"/api/v1/apps", "Bearer "+token, nil); res.status != http.StatusOK {
		t.Fatalf("after a restart, the generated token is refused: %d %s", res.status, res.body)
	}

	// Configured tokens: nothing is generated.
	cfg3 := baseConfig(t)
	start(t, cfg3)
	if _, err := os.Stat(filepath.Join(cfg3.DataDir, server.TokenFile)); err == nil {
		t.Fatal("a token file was generated although tokens are configured")
	}
}

// TestAdminPublishBadInput: every kind of bad publish request is a 4xx
// with the error shape, never a 500, and changes nothing.
func TestAdminPublishBadInput(t *testing.T) {
	n := start(t, baseConfig(t))
	key := apktest.NewKey(t)
	good := commitOf("good")
	n.publish(t, good, "main", hello(t, key, "1.0-r0", "good"))
	url := admAdmin(n) + "/api/v1/apps/" + testApp + "/builds"
	valid := string(admPublishBody(t, good, "main"))

	cases := []struct {
		name   string
		url    string
		body   string
		status int
		code   string
	}{
		{"invalid JSON", url, `{"commit":`, 400, "bad_json"},
		{"not JSON", url, `commit=` + good, 400, "bad_json"},
		{"unknown field", url, `{"commit":"` + good + `","branch":"main","brnach":"x"}`, 400, "bad_json"},
		{"wrong type", url, `{"commit":"` + good + `","branch":"main","tags":"v1"}`, 400, "bad_json"},
		{"trailing object", url, valid + `{}`, 400, "bad_json"},
		{"trailing garbage", url, valid + `xyz`, 400, "bad_json"},
		{"trailing brace", url, valid + `}`, 400, "bad_json"},
		{"trailing bracket", url, valid + `]`, 400, "bad_json"},
		{"empty body", url, ``, 400, "bad_json"},
		{"whitespace body", url, "  \n", 400, "bad_json"},
		{"JSON array", url, `[]`, 400, "bad_json"},
		{"JSON null", url, `null`, 400, ""},
		{"no commit", url, `{"branch":"main"}`, 400, "invalid"},
		{"short commit", url, `{"commit":"` + good[:12] + `","branch":"main"}`, 400, "invalid"},
		{"non-hex commit", url, `{"commit":"` + strings.Repeat("z", 40) + `","branch":"main"}`, 400, "invalid"},
		{"41-digit commit", url, `{"commit":"` + good + `a","branch":"main"}`, 400, "invalid"},
		{"branch with ..", url, `{"commit":"` + good + `","branch":"a..b"}`, 400, "invalid"},
		{"branch starting with -", url, `{"commit":"` + good + `","branch":"-x"}`, 400, "invalid"},
		{"branch with space", url, `{"commit":"` + good + `","branch":"a b"}`, 400, "invalid"},
		{"branch ending in .lock", url, `{"commit":"` + good + `","branch":"x.lock"}`, 400, "invalid"},
		{"branch with empty component", url, `{"commit":"` + good + `","branch":"a//b"}`, 400, "invalid"},
		{"tag with ..", url, `{"commit":"` + good + `","branch":"main","tags":["v1..2"]}`, 400, "invalid"},
		{"branch not UTF-8", url, `{"commit":"` + good + "\",\"branch\":\"fix-\xff\"}", 400, "bad_json"},
		{"tag not UTF-8", url, `{"commit":"` + good + "\",\"branch\":\"main\",\"tags\":[\"v\xc3\"]}", 400, "bad_json"},
		{"empty tag", url, `{"commit":"` + good + `","branch":"main","tags":[""]}`, 400, "invalid"},
		{"org starting with -", admAdmin(n) + "/api/v1/apps/-x/hello/builds", valid, 400, "invalid"},
		{"org starting with .", admAdmin(n) + "/api/v1/apps/.x/hello/builds", valid, 400, "invalid"},
		{"app with a bad character", admAdmin(n) + "/api/v1/apps/acme/he!lo/builds", valid, 400, "invalid"},
		{"app too long", admAdmin(n) + "/api/v1/apps/acme/" + strings.Repeat("a", 200) + "/builds", valid, 400, "invalid"},
		{"message too long", url, `{"commit":"` + good + `","branch":"main","message":"` + strings.Repeat("m", 70<<10) + `"}`, 400, "invalid"},
		{"body over 1 MiB", url, `{"commit":"` + good + `","branch":"main","message":"` + strings.Repeat("m", 1<<20) + `"}`, 413, "too_large"},
		{"body over 1 MiB of whitespace", url, strings.Repeat(" ", 1<<20+10) + valid, 413, "too_large"},
	}
	for _, c := range cases {
		res := admAuthed(t, http.MethodPost, c.url, []byte(c.body))
		if res.status >= 500 {
			t.Errorf("%s: %d %s", c.name, res.status, res.body)
			continue
		}
		if res.status != c.status {
			t.Errorf("%s: status %d, want %d; body %.300s", c.name, res.status, c.status, res.body)
			continue
		}
		admWantError(t, c.name, res, c.status, c.code)
	}

	// A commit with nothing uploaded, and one with a package but no index.
	missing := commitOf("missing")
	res := admAuthed(t, http.MethodPost, url, admPublishBody(t, missing, "main"))
	msg := admWantError(t, "publish of a commit with nothing uploaded", res, http.StatusUnprocessableEntity, "")
	if !strings.Contains(msg, "APKINDEX.tar.gz") || !strings.Contains(msg, missing) {
		t.Errorf("422 message %q does not name the missing APKINDEX.tar.gz of %s", msg, missing)
	}
	noIndex := commitOf("no index")
	files := hello(t, key, "2.0-r0", "no index")
	if r := admAuthed(t, http.MethodPut, admUploadURL(n, noIndex, "x86_64", "hello-2.0-r0.apk"), files["x86_64/hello-2.0-r0.apk"]); r.status != http.StatusCreated {
		t.Fatalf("uploading a package: %d %s", r.status, r.body)
	}
	res = admAuthed(t, http.MethodPost, url, admPublishBody(t, noIndex, "main"))
	msg = admWantError(t, "publish of a commit without an index", res, http.StatusUnprocessableEntity, "")
	if !strings.Contains(msg, "APKINDEX.tar.gz") || !strings.Contains(msg, noIndex) {
		t.Errorf("422 message %q does not name the missing APKINDEX.tar.gz of %s", msg, noIndex)
	}

	// Nothing moved: main is still at good and it is the only build.
	refs := admRefsOf(t, n)
	if refs.Branches["main"].Commit != good || len(refs.Branches) != 1 || len(refs.Tags) != 0 {
		t.Fatalf("refs after bad publishes: %+v, want only main at %s", refs, good)
	}
	if got := admCommits(admBuilds(t, n, "")); !slices.Equal(got, []string{good}) {
		t.Fatalf("builds after bad publishes: %v, want only %s", got, good)
	}
}

// TestAdminUpload: the same bytes again are fine, other bytes replace an
// unpublished file but never a published one, bad names are refused and
// an upload over the limit is 413.
func TestAdminUpload(t *testing.T) {
	cfg := baseConfig(t)
	n := start(t, cfg)
	key := apktest.NewKey(t)
	c := commitOf("upload")
	v1 := hello(t, key, "1.0-r0", "first")
	v2 := hello(t, key, "1.0-r0", "second") // same names, other bytes
	if bytes.Equal(v1["x86_64/APKINDEX.tar.gz"], v2["x86_64/APKINDEX.tar.gz"]) {
		t.Fatal("test setup: both indexes are equal")
	}
	pkg, index := "hello-1.0-r0.apk", "APKINDEX.tar.gz"
	put := func(file string, body []byte) admResult {
		t.Helper()
		return admAuthed(t, http.MethodPut, admUploadURL(n, c, "x86_64", file), body)
	}
	want := func(what string, r admResult, status int) {
		t.Helper()
		if r.status != status {
			t.Fatalf("%s: %d, want %d; body %s", what, r.status, status, r.body)
		}
	}

	want("first upload of the package", put(pkg, v1["x86_64/"+pkg]), http.StatusCreated)
	want("first upload of the index", put(index, v1["x86_64/"+index]), http.StatusCreated)
	want("the same package again", put(pkg, v1["x86_64/"+pkg]), http.StatusOK)
	want("the same index again", put(index, v1["x86_64/"+index]), http.StatusOK)
	// Not published yet: CI may rebuild and upload again.
	want("other package bytes before publishing", put(pkg, v2["x86_64/"+pkg]), http.StatusOK)
	want("other index bytes before publishing", put(index, v2["x86_64/"+index]), http.StatusOK)

	n.publish(t, c, "main", v2)
	for _, u := range []string{n.repo(c), n.repo("main")} {
		for _, f := range []string{index, pkg} {
			resp, body := get(t, u+"/x86_64/"+f)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, v2["x86_64/"+f]) {
				t.Fatalf("%s/x86_64/%s: %d, same as the last upload: %v", u, f, resp.StatusCode, bytes.Equal(body, v2["x86_64/"+f]))
			}
		}
	}

	// Published: immutable.
	want("the same index after publishing", put(index, v2["x86_64/"+index]), http.StatusOK)
	want("the same package after publishing", put(pkg, v2["x86_64/"+pkg]), http.StatusOK)
	admWantError(t, "other index bytes after publishing", put(index, v1["x86_64/"+index]), http.StatusConflict, "")
	admWantError(t, "other package bytes after publishing", put(pkg, v1["x86_64/"+pkg]), http.StatusConflict, "")
	admWantError(t, "a new package under a published commit", put("other-1.0-r0.apk", []byte("new package")), http.StatusConflict, "")
	admWantError(t, "an index of a new arch under a published commit", admAuthed(t, http.MethodPut, admUploadURL(n, c, "aarch64", index), v1["x86_64/"+index]), http.StatusConflict, "")
	for _, f := range []string{index, pkg} {
		resp, body := get(t, n.repo(c)+"/x86_64/"+f)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, v2["x86_64/"+f]) {
			t.Fatalf("after refused overwrites, %s changed (status %d)", f, resp.StatusCode)
		}
	}
	if resp, _ := get(t, n.repo(c)+"/x86_64/other-1.0-r0.apk"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a refused new file is served: %d", resp.StatusCode)
	}

	// Bad names: 400, or 404 where the router cannot match; never 500.
	fresh := commitOf("fresh")
	base := admAdmin(n) + "/api/v1/apps/"
	bad := []struct {
		name, path string
		exact      int // 0: 400 or 404
	}{
		{"arch ..", testApp + "/builds/" + fresh + "/../hello-1.0-r0.apk", 400},
		{"arch .", testApp + "/builds/" + fresh + "/./hello-1.0-r0.apk", 400},
		{"arch %2E%2E", testApp + "/builds/" + fresh + "/%2E%2E/hello-1.0-r0.apk", 400},
		{"arch with a bad character", testApp + "/builds/" + fresh + "/x86$64/hello-1.0-r0.apk", 400},
		{"file x.txt", testApp + "/builds/" + fresh + "/x86_64/x.txt", 400},
		{"file .apk", testApp + "/builds/" + fresh + "/x86_64/.apk", 400},
		{"file ..", testApp + "/builds/" + fresh + "/x86_64/..", 400},
		{"file with encoded slash", testApp + "/builds/" + fresh + "/x86_64/..%2F..%2Fescape.apk", 400},
		{"file apkindex in lower case", testApp + "/builds/" + fresh + "/x86_64/apkindex.tar.gz", 400},
		{"commit zz", testApp + "/builds/zz/x86_64/hello-1.0-r0.apk", 400},
		{"abbreviated commit", testApp + "/builds/" + fresh[:12] + "/x86_64/hello-1.0-r0.apk", 400},
		{"commit ..", testApp + "/builds/../x86_64/hello-1.0-r0.apk", 400},
		{"org ..", "../hello/builds/" + fresh + "/x86_64/hello-1.0-r0.apk", 400},
		{"app -x", "acme/-x/builds/" + fresh + "/x86_64/hello-1.0-r0.apk", 400},
		{"empty arch", testApp + "/builds/" + fresh + "//hello-1.0-r0.apk", 0},
		{"missing file", testApp + "/builds/" + fresh + "/x86_64/", 0},
		{"extra segment", testApp + "/builds/" + fresh + "/x86_64/a/hello-1.0-r0.apk", 0},
	}
	for _, b := range bad {
		res := admAuthed(t, http.MethodPut, base+b.path, []byte("data"))
		switch {
		case res.status >= 500:
			t.Errorf("%s: %d %s", b.name, res.status, res.body)
		case b.exact != 0 && res.status != b.exact:
			t.Errorf("%s: %d, want %d; body %s", b.name, res.status, b.exact, res.body)
		case b.exact == 0 && res.status != 400 && res.status != 404:
			t.Errorf("%s: %d, want 400 or 404; body %s", b.name, res.status, res.body)
		default:
			admWantError(t, b.name, res, res.status, "")
		}
	}
	// None of them stored anything outside the artifact layout.
	err := filepath.WalkDir(cfg.DataDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(cfg.DataDir, p)
		if !d.IsDir() && (strings.Contains(rel, "escape") || strings.HasPrefix(filepath.Base(p), "upload-")) {
			t.Errorf("stray file after bad uploads: %s", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAdminUploadTooLarge: an upload over MaxUpload is 413 and leaves no
// file behind, neither stored nor spooled.
func TestAdminUploadTooLarge(t *testing.T) {
	cfg := baseConfig(t)
	cfg.MaxUpload = 4 << 10
	n := start(t, cfg)
	c := commitOf("large")
	url := admUploadURL(n, c, "x86_64", "big-1.0-r0.apk")
	admWantError(t, "upload over the limit", admAuthed(t, http.MethodPut, url, bytes.Repeat([]byte{'x'}, 64<<10)), http.StatusRequestEntityTooLarge, "")
	admWantError(t, "upload one byte over the limit", admAuthed(t, http.MethodPut, url, bytes.Repeat([]byte{'x'}, 4<<10+1)), http.StatusRequestEntityTooLarge, "")
	// Nothing was stored: an upload of exactly the limit is a first upload.
	if res := admAuthed(t, http.MethodPut, url, bytes.Repeat([]byte{'y'}, 4<<10)); res.status != http.StatusCreated {
		t.Fatalf("upload of exactly the limit after refused ones: %d %s", res.status, res.body)
	}
	matches, _ := filepath.Glob(filepath.Join(cfg.DataDir, "upload-*"))
	if len(matches) > 0 {
		t.Fatalf("spooled uploads left behind: %v", matches)
	}
}

// TestAdminListings: apps, builds (per branch and all), refs, and how a
// publish of the head and of an older commit move them.
func TestAdminListings(t *testing.T) {
	n := start(t, baseConfig(t))
	key := apktest.NewKey(t)
	base := admAdmin(n)
	a, b, c := commitOf("list A"), commitOf("list B"), commitOf("list C")

	// An app with uploads but no build is not listed.
	other := hello(t, key, "1.0-r0", "other")
	if r := admAuthed(t, http.MethodPut, base+"/api/v1/apps/other/unpublished/builds/"+a+"/x86_64/APKINDEX.tar.gz", other["x86_64/APKINDEX.tar.gz"]); r.status != http.StatusCreated {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}

	n.publish(t, a, "main", hello(t, key, "1.0-r0", "A"))
	n.publish(t, b, "main", hello(t, key, "2.0-r0", "B"), "v2")
	n.publish(t, c, "feature/x", hello(t, key, "3.0-r0", "C"))

	var apps struct {
		Apps []struct {
			Org  string `json:"org"`
			App  string `json:"app"`
			Name string `json:"name"`
		} `json:"apps"`
	}
	admDecode(t, "apps", admAuthed(t, http.MethodGet, base+"/api/v1/apps", nil), http.StatusOK, &apps)
	if len(apps.Apps) != 1 || apps.Apps[0].Name != testApp || apps.Apps[0].Org != "acme" || apps.Apps[0].App != "hello" {
		t.Fatalf("apps: %+v, want only %s", apps.Apps, testApp)
	}

	main := admBuilds(t, n, "branch=main")
	if got := admCommits(main); !slices.Equal(got, []string{b, a}) {
		t.Fatalf("builds on main: %v, want [B A] = [%s %s]", got, b, a)
	}
	if !slices.Equal(main[0].Tags, []string{"v2"}) || len(main[1].Tags) != 0 {
		t.Fatalf("tags on main's builds: %v and %v, want [v2] and []", main[0].Tags, main[1].Tags)
	}
	for _, bd := range main {
		if bd.Branch != "main" || !slices.Equal(bd.Archs, []string{"x86_64"}) || bd.PublishedAt.IsZero() || bd.Message == "" {
			t.Fatalf("build record incomplete: %+v", bd)
		}
	}
	if !main[0].PublishedAt.After(main[1].PublishedAt) {
		t.Fatalf("B published at %v, not after A at %v", main[0].PublishedAt, main[1].PublishedAt)
	}
	if got := admCommits(admBuilds(t, n, "branch=feature/x")); !slices.Equal(got, []string{c}) {
		t.Fatalf("builds on feature/x: %v, want [C]", got)
	}
	if got := admCommits(admBuilds(t, n, "branch=feature%2Fx")); !slices.Equal(got, []string{c}) {
		t.Fatalf("builds on feature%%2Fx: %v, want [C]", got)
	}
	if got := admCommits(admBuilds(t, n, "")); !slices.Equal(got, []string{c, b, a}) {
		t.Fatalf("all builds: %v, want [C B A]", got)
	}
	if got := admCommits(admBuilds(t, n, "limit=1")); !slices.Equal(got, []string{c}) {
		t.Fatalf("all builds, limit=1: %v, want [C]", got)
	}
	if got := admCommits(admBuilds(t, n, "branch=main&limit=1")); !slices.Equal(got, []string{b}) {
		t.Fatalf("main, limit=1: %v, want [B]", got)
	}
	buildsURL := base + "/api/v1/apps/" + testApp + "/builds"
	for _, q := range []string{"limit=0", "limit=abc", "limit=-1", "limit=1.5", "branch=a..b", "branch=-x"} {
		admWantError(t, "builds?"+q, admAuthed(t, http.MethodGet, buildsURL+"?"+q, nil), http.StatusBadRequest, "")
	}
	admWantError(t, "builds?branch=nope", admAuthed(t, http.MethodGet, buildsURL+"?branch=nope", nil), http.StatusNotFound, "not_found")

	refs := admRefsOf(t, n)
	if len(refs.Branches) != 2 || refs.Branches["main"].Commit != b || refs.Branches["feature/x"].Commit != c {
		t.Fatalf("branches: %+v, want main→B, feature/x→C", refs.Branches)
	}
	if len(refs.Tags) != 1 || refs.Tags["v2"].Commit != b {
		t.Fatalf("tags: %+v, want v2→B", refs.Tags)
	}
	for name, p := range refs.Branches {
		if p.UpdatedAt.IsZero() {
			t.Fatalf("branch %s without updated_at", name)
		}
	}
	if refs.Tags["v2"].UpdatedAt.IsZero() {
		t.Fatal("tag v2 without updated_at")
	}

	// Publishing the head again changes nothing.
	n.publish(t, b, "main", nil)
	again := admRefsOf(t, n)
	if again.Branches["main"] != refs.Branches["main"] {
		t.Fatalf("publishing the head moved main: %+v, then %+v", refs.Branches["main"], again.Branches["main"])
	}
	if again.Tags["v2"] != refs.Tags["v2"] {
		t.Fatalf("publishing the head moved v2: %+v, then %+v", refs.Tags["v2"], again.Tags["v2"])
	}
	if got := admCommits(admBuilds(t, n, "branch=main")); !slices.Equal(got, []string{b, a}) {
		t.Fatalf("publishing the head changed main's history: %v", got)
	}
	if got := admCommits(admBuilds(t, n, "")); !slices.Equal(got, []string{c, b, a}) {
		t.Fatalf("publishing the head changed the builds: %v", got)
	}

	// Publishing an older commit moves main back, as a force-push does.
	n.publish(t, a, "main", nil)
	back := admRefsOf(t, n)
	if back.Branches["main"].Commit != a {
		t.Fatalf("after republishing A, main is at %s, want A", back.Branches["main"].Commit)
	}
	if !back.Branches["main"].UpdatedAt.After(refs.Branches["main"].UpdatedAt) {
		t.Fatalf("main's updated_at did not grow on the move back: %v, then %v", refs.Branches["main"].UpdatedAt, back.Branches["main"].UpdatedAt)
	}
	if back.Tags["v2"].Commit != b || back.Branches["feature/x"].Commit != c {
		t.Fatalf("moving main back moved other refs: %+v", back)
	}
	if got := admCommits(admBuilds(t, n, "branch=main")); !slices.Equal(got, []string{a, b, a}) {
		t.Fatalf("main's history after the move back: %v, want [A B A]", got)
	}
	// The build itself is recorded once.
	if got := admCommits(admBuilds(t, n, "")); !slices.Equal(got, []string{c, b, a}) {
		t.Fatalf("builds after the move back: %v, want [C B A]", got)
	}
	resp, _ := get(t, n.repo("main")+"/x86_64/APKINDEX.tar.gz")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Uplink-Commit") != a {
		t.Fatalf("main serves %d from %q after the move back, want 200 from A", resp.StatusCode, resp.Header.Get("X-Uplink-Commit"))
	}
}

// TestAdminRequestID: every answer of the admin listener, and of the
// distribution listener while it logs requests, carries an X-Request-Id,
// a fresh one per request unless the client sent one.
func TestAdminRequestID(t *testing.T) {
	cfg := baseConfig(t)
	cfg.AccessLog = true
	n := start(t, cfg)
	base := admAdmin(n)
	seen := map[string]bool{}
	for _, r := range []admResult{
		admAuthed(t, http.MethodGet, base+"/api/v1/apps", nil),
		admAuthed(t, http.MethodGet, base+"/api/v1/apps", nil),
		admDo(t, http.MethodGet, base+"/api/v1/apps", "", nil),
		admAuthed(t, http.MethodPost, base+"/api/v1/apps/"+testApp+"/builds", []byte("{")),
		admAuthed(t, http.MethodGet, base+"/api/v1/nope", nil),
		admDo(t, http.MethodGet, base+"/healthz", "", nil),
		admDo(t, http.MethodGet, n.dist+"/main/"+testApp+"/x86_64/APKINDEX.tar.gz", "", nil),
	} {
		id := r.header.Get("X-Request-Id")
		if id == "" {
			t.Fatalf("answer %d %s without X-Request-Id", r.status, r.body)
		}
		if seen[id] {
			t.Fatalf("X-Request-Id %q given twice", id)
		}
		seen[id] = true
	}
	resp, _ := get(t, base+"/healthz", "X-Request-Id", "ci-run-42")
	if got := resp.Header.Get("X-Request-Id"); got != "ci-run-42" {
		t.Fatalf("X-Request-Id %q, want the client's ci-run-42", got)
	}
}

// TestAdminTokenFileEmpty: an empty token file (a crash between creating
// and writing it, or an operator's `: > admin-token`) must not leave a
// server that refuses every request: either start-up fails naming the
// file, or a usable token is generated into it.
func TestAdminTokenFileEmpty(t *testing.T) {
	cfg := baseConfig(t)
	cfg.AdminTokens = nil
	path := filepath.Join(cfg.DataDir, server.TokenFile)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, nil)
	if err != nil {
		if !strings.Contains(err.Error(), path) {
			t.Fatalf("start-up refused without naming %s: %v", path, err)
		}
		return
	}
	_ = srv
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))
	if token == "" {
		t.Fatal("the server started with an empty token file and left it empty: no request can authenticate")
	}
	n := start(t, cfg)
	if res := admDo(t, http.MethodGet, admAdmin(n)+"/api/v1/apps", "Bearer "+token, nil); res.status != http.StatusOK {
		t.Fatalf("the token in the file is refused: %d %s", res.status, res.body)
	}
}
