package incus

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fixtures recorded from LXD 5.0.2 and Incus 6.0.4 (reference §1-§4),
// trimmed to the fields the client reads.

// extensions is the part of api_extensions that matters to the client.
var extensions = map[Dialect][]string{
	DialectLXD: {"api_filtering", "container_exec_recording", "file_delete", "network_leases",
		"projects", "cloud_init"},
	DialectIncus: {"api_filtering", "container_exec_recording", "file_delete", "network_leases",
		"projects", "instances_rebuild", "instance_create_start"},
}

func serverJSON(d Dialect) string {
	version := map[Dialect]string{DialectLXD: "5.0.2", DialectIncus: "6.0.4"}[d]
	ext, _ := json.Marshal(extensions[d])
	return fmt.Sprintf(`{"api_extensions":%s,"api_status":"stable","api_version":"1.0","auth":"trusted",
"public":false,"auth_methods":["tls"],"environment":{"addresses":[],"architectures":["x86_64","i686"],
"certificate":"-----BEGIN CERTIFICATE-----\n...","certificate_fingerprint":"2b22c1e0","driver":"lxc",
"driver_version":"5.0.2","kernel":"Linux","project":"default","server":%q,"server_clustered":false,
"server_name":"vm","server_pid":1234,"server_version":%q,"storage":"dir","storage_version":"1"}}`, ext, d, version)
}

// untrustedJSON is GET /1.0 for a client the server does not trust.
const untrustedJSON = `{"api_extensions":["api_filtering"],"api_status":"stable","api_version":"1.0",
"auth":"untrusted","public":false,"auth_methods":["tls"]}`

func syncBody(metadata string) string {
	return `{"type":"sync","status":"Success","status_code":200,"operation":"","error_code":0,"error":"","metadata":` + metadata + `}`
}

func errorBody(code int, msg string) string {
	return fmt.Sprintf(`{"type":"error","status":"","status_code":0,"operation":"","error_code":%d,"error":%q,"metadata":null}`, code, msg)
}

// opJSON is an operation; metadata is JSON or "".
func opJSON(id string, code StatusCode, errMsg, metadata string) string {
	status := map[StatusCode]string{100: "Created", 103: "Running", 200: "Success", 400: "Failure", 401: "Cancelled"}[code]
	if metadata == "" {
		metadata = "null"
	}
	return fmt.Sprintf(`{"id":%q,"class":"task","description":"Executing command","created_at":"2025-01-02T03:04:05.123456789Z",
"updated_at":"2025-01-02T03:04:05.123456789Z","status":%q,"status_code":%d,"resources":{"instances":["/1.0/instances/c1"]},
"metadata":%s,"may_cancel":false,"err":%q,"location":"none"}`, id, status, code, metadata, errMsg)
}

func asyncBody(id string) string {
	return `{"type":"async","status":"Operation created","status_code":100,"operation":"/1.0/operations/` + id +
		`","error_code":0,"error":"","metadata":` + opJSON(id, 103, "", "") + `}`
}

const instanceJSON = `{"architecture":"x86_64","config":{"image.os":"Alpine","user.managed_by":"uplink",
"user.uplink.installation":"42","user.uplink.pin":"branch:main","volatile.base_image":"2349e2"},
"devices":{},"ephemeral":false,"profiles":["default"],"stateful":false,"description":"",
"created_at":"2025-01-02T03:04:05.123456789Z","expanded_config":{"image.os":"Alpine","user.managed_by":"uplink",
"user.uplink.installation":"42","user.uplink.pin":"branch:main"},"expanded_devices":{"root":{"path":"/","pool":"default","type":"disk"}},
"name":"c1","status":"Running","status_code":103,"last_used_at":"2025-01-02T03:04:06Z","location":"none",
"type":"container","project":"default"}`

// fakeRequest is a request the fake daemon received.
type fakeRequest struct {
	Method, Path, RawQuery string
	Header                 http.Header
	Body                   []byte
}

// fakeDaemon is an in-process Incus or LXD daemon answering with
// fixtures. Unknown routes get the daemon's JSON 404.
type fakeDaemon struct {
	t       *testing.T
	dialect Dialect
	mux     *http.ServeMux
	trusted *x509.Certificate // over TLS, the one client trusted
	server  string            // GET /1.0, set before serving

	mu   sync.Mutex
	reqs []fakeRequest
}

func newFake(t *testing.T, d Dialect) *fakeDaemon {
	f := &fakeDaemon{t: t, dialect: d, mux: http.NewServeMux(), server: serverJSON(d)}
	f.handle("GET /1.0", func(w http.ResponseWriter, r *http.Request) { writeBody(w, 200, syncBody(f.server)) })
	return f
}

// handle registers a handler for a ServeMux pattern.
func (f *fakeDaemon) handle(pattern string, h http.HandlerFunc) { f.mux.HandleFunc(pattern, h) }

// reply registers a fixed answer.
func (f *fakeDaemon) reply(pattern string, status int, body string) {
	f.handle(pattern, func(w http.ResponseWriter, r *http.Request) { writeBody(w, status, body) })
}

// script registers answers given in turn; the last one repeats.
func (f *fakeDaemon) script(pattern string, replies ...reply) {
	var mu sync.Mutex
	i := 0
	f.handle(pattern, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		rp := replies[min(i, len(replies)-1)]
		i++
		mu.Unlock()
		writeBody(w, rp.status, rp.body)
	})
}

type reply struct {
	status int
	body   string
}

func writeBody(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusAccepted {
		var r struct{ Operation string }
		_ = json.Unmarshal([]byte(body), &r)
		w.Header().Set("Location", r.Operation)
	}
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func (f *fakeDaemon) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, fakeRequest{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
	f.mu.Unlock()
	r.Body = io.NopCloser(strings.NewReader(string(body)))
	if r.TLS != nil && (len(r.TLS.PeerCertificates) == 0 || !r.TLS.PeerCertificates[0].Equal(f.trusted)) {
		if r.URL.Path == "/1.0" {
			writeBody(w, 200, syncBody(untrustedJSON))
		} else {
			writeBody(w, 403, errorBody(403, "not authorized"))
		}
		return
	}
	if _, pattern := f.mux.Handler(r); pattern == "" {
		writeBody(w, http.StatusNotFound, errorBody(404, "not found"))
		return
	}
	f.mux.ServeHTTP(w, r)
}

// requests returns the requests received after GET /1.0 at connect.
func (f *fakeDaemon) requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeRequest
	for _, r := range f.reqs {
		if r.Path != "/1.0" {
			out = append(out, r)
		}
	}
	return out
}

// request returns the one request for method and path.
func (f *fakeDaemon) request(method, path string) fakeRequest {
	f.t.Helper()
	var found []fakeRequest
	for _, r := range f.requests() {
		if r.Method == method && r.Path == path {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		f.t.Fatalf("%d requests %s %s, want 1; all: %s", len(found), method, path, f.summary())
	}
	return found[0]
}

func (f *fakeDaemon) summary() string {
	var s []string
	for _, r := range f.requests() {
		s = append(s, r.Method+" "+r.Path+"?"+r.RawQuery)
	}
	return strings.Join(s, ", ")
}

// listenUnix serves the fake on a unix socket. The socket lives under /tmp
// since t.TempDir() can exceed the 108-byte limit of socket paths.
func (f *fakeDaemon) listenUnix() string {
	dir, err := os.MkdirTemp("/tmp", "incus-test-")
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "unix.socket")
	l, err := net.Listen("unix", sock)
	if err != nil {
		f.t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(f)
	srv.Listener.Close()
	srv.Listener = l
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	f.t.Cleanup(srv.Close)
	return sock
}

// connect serves the fake on a unix socket and connects to it.
func (f *fakeDaemon) connect() *ProtocolIncus {
	f.t.Helper()
	c, err := ConnectIncusUnix(testCtx(f.t), f.listenUnix(), nil)
	if err != nil {
		f.t.Fatalf("connect: %v", err)
	}
	return c
}

// testCtx bounds a test: a hanging wait fails instead of blocking.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// forDialects runs a test against a fake of each daemon.
func forDialects(t *testing.T, test func(t *testing.T, f *fakeDaemon)) {
	for _, d := range []Dialect{DialectIncus, DialectLXD} {
		t.Run(string(d), func(t *testing.T) { test(t, newFake(t, d)) })
	}
}
