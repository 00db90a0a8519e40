package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/incusimage"
)

// Incus is a real Incus (or LXD: same REST API) daemon, started for the
// tests of one test binary and shared by them: start-up and image import
// take seconds. Tests isolate themselves with NewProject or unique
// instance names (UniqueName) and remove what they create (the helpers
// below register that).
//
// The daemon runs as root from a temporary state directory with a `dir`
// storage pool named "default", the root disk in the default profile, no
// network, the test image of internal/incusimage under ImageAlias, and
// HTTPS on 127.0.0.1 with a trusted client certificate. It lives until
// the test binary exits; a reaper process (this test binary re-executed)
// then force-stops the instances, kills the daemon, unmounts and removes
// its directory and the empty /sys/fs/cgroup/*/lxc.pivot directories
// liblxc leaves behind. StopDaemons does the same at once.
type Incus struct {
	Kind    string // "incus" or "lxd", from GET /1.0 environment.server
	Version string // environment.server_version

	Socket string // unix socket: full trust, plain HTTP
	Dir    string // INCUS_DIR or LXD_DIR
	Log    string // daemon log file

	ImageAlias       string // incusimage.Alias
	ImageFingerprint string

	HTTPSAddress string // 127.0.0.1:<port>, core.https_address
	ServerCert   []byte // PEM, the daemon's self-signed certificate
	ClientCert   []byte // PEM, ECDSA P-384, trusted by the daemon
	ClientKey    []byte // PEM (PKCS#8)

	StartupTime time.Duration // process start until GET /1.0 answered
	SetupTime   time.Duration // storage, profile, image, HTTPS and trust

	pid    int
	client *http.Client // over Socket
	// proc is the daemon, started without Pdeathsig: when the test binary
	// dies the reaper, not the kernel, must stop it after its instances.
	proc *Proc
}

// daemonKind describes how to run one kind of daemon.
type daemonKind struct {
	name    string // "incus" or "lxd"
	dirEnv  string // INCUS_DIR / LXD_DIR
	dirName string // os.MkdirTemp pattern: unix socket paths are limited to 108 bytes
	binary  func() (bin string, env []string, err error)
}

var (
	incusKind = daemonKind{name: "incus", dirEnv: "INCUS_DIR", dirName: "inc", binary: incusBinary}
	lxdKind   = daemonKind{name: "lxd", dirEnv: "LXD_DIR", dirName: "lxd", binary: lxdBinary}
)

// incusBinary is incusd from the bookworm-backports .debs that
// scripts/install-test-deps.sh unpacks into $UPLINK_TEST_ROOT/incus.
func incusBinary() (string, []string, error) {
	root := filepath.Join(incusimage.TestRoot(), "incus")
	bin := filepath.Join(root, "usr", "libexec", "incus", "incusd")
	if _, err := os.Stat(bin); err != nil {
		return "", nil, fmt.Errorf("incusd not found (%v); run `make test` or scripts/install-test-deps.sh, which unpack Incus there", err)
	}
	libs, _ := filepath.Glob(filepath.Join(root, "usr", "lib", "*-linux-gnu"))
	env := []string{"LD_LIBRARY_PATH=" + strings.Join(libs, ":"), "PATH=" + filepath.Join(root, "usr", "bin") + ":" + os.Getenv("PATH")}
	return bin, env, nil
}

// lxdBinary is Debian 12's lxd (5.0.2).
func lxdBinary() (string, []string, error) {
	bin, err := exec.LookPath("lxd")
	if err != nil {
		if _, serr := os.Stat("/usr/bin/lxd"); serr != nil {
			return "", nil, fmt.Errorf("lxd not found (%v); run `make test` or scripts/install-test-deps.sh, which install Debian's lxd package", err)
		}
		bin = "/usr/bin/lxd"
	}
	return bin, nil, nil
}

type shared struct {
	once sync.Once
	d    *Incus
	err  error
}

var (
	sharedIncus shared
	sharedLXD   shared
	daemonsMu   sync.Mutex
	daemons     []*Incus // started by this process, for StopDaemons
)

// StartIncus returns this test binary's Incus daemon, starting it on the
// first call. It fails t (never skips) if the daemon cannot run.
func StartIncus(t testing.TB) *Incus {
	t.Helper()
	return startShared(t, &sharedIncus, incusKind)
}

// StartLXD returns this test binary's LXD daemon (Debian's LXD 5.0.2),
// starting it on the first call, like StartIncus.
func StartLXD(t testing.TB) *Incus {
	t.Helper()
	return startShared(t, &sharedLXD, lxdKind)
}

func startShared(t testing.TB, s *shared, kind daemonKind) *Incus {
	t.Helper()
	s.once.Do(func() { s.d, s.err = startDaemon(kind) })
	if s.err != nil {
		t.Fatalf("testenv: %s: %v", kind.name, s.err)
	}
	return s.d
}

func startDaemon(kind daemonKind) (*Incus, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("must run as root to start %s (CI does); euid is %d", kind.name, os.Geteuid())
	}
	bin, env, err := kind.binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("/tmp", kind.dirName)
	if err != nil {
		return nil, err
	}
	// Unprivileged containers (host uid 100000+) must traverse it.
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	d := &Incus{
		Kind:       kind.name,
		Dir:        dir,
		Socket:     filepath.Join(dir, "unix.socket"),
		Log:        filepath.Join(dir, kind.name+".log"),
		ImageAlias: incusimage.Alias,
	}
	d.client = unixClient(d.Socket)
	begin := time.Now()
	cmd, err := d.launch(kind, bin, env)
	if err != nil {
		return nil, err
	}
	fail := func(format string, args ...any) (*Incus, error) {
		msg := fmt.Sprintf(format, args...)
		shown := slices.DeleteFunc(slices.Clone(env), func(e string) bool { return strings.HasPrefix(e, "PATH=") })
		err := fmt.Errorf("%s\ncommand: %s %s=%s %s\ndaemon log (%s):\n%s", msg, strings.Join(shown, " "), kind.dirEnv, dir, strings.Join(cmd.Args, " "), d.Log, d.logTail())
		d.teardown(d.proc)
		return nil, err
	}
	srv, err := d.waitAPI(kind.name)
	if err != nil {
		return fail("%v", err)
	}
	d.StartupTime = time.Since(begin)
	d.Version = srv.Environment.ServerVersion
	if srv.Environment.Server != "" {
		d.Kind = srv.Environment.Server
	}

	begin = time.Now()
	if err := d.setup(); err != nil {
		return fail("set-up: %v", err)
	}
	d.SetupTime = time.Since(begin)
	return d, nil
}

// launch starts the daemon process and its reaper, and registers d for
// StopDaemons.
func (d *Incus) launch(kind daemonKind, bin string, env []string) (*exec.Cmd, error) {
	// stdout/stderr go to a file, not a pipe: a Go daemon writing to a
	// broken pipe after the test binary exits would die of SIGPIPE before
	// the reaper could stop its instances.
	out, err := os.Create(filepath.Join(d.Dir, kind.name+".out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(bin, "--group", "root", "--logfile", d.Log)
	cmd.Env = append(os.Environ(), kind.dirEnv+"="+d.Dir)
	cmd.Env = append(cmd.Env, env...)
	cmd.Dir = d.Dir
	cmd.Stdout, cmd.Stderr = out, out
	// Own session: a ^C to `go test` must not kill it before the reaper ran.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if d.proc, err = StartProc(cmd); err != nil {
		os.RemoveAll(d.Dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	d.pid = cmd.Process.Pid
	if err := startReaper(d); err != nil {
		d.teardown(nil)
		return nil, err
	}
	daemonsMu.Lock()
	daemons = append(daemons, d)
	daemonsMu.Unlock()
	return cmd, nil
}

// waitAPI waits up to a minute for the daemon to answer GET /1.0.
func (d *Incus) waitAPI(name string) (serverInfo, error) {
	var srv serverInfo
	err := d.proc.WaitReady(context.Background(), 60*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := d.Query(ctx, http.MethodGet, "/1.0", nil)
		if err != nil {
			return err
		}
		return json.Unmarshal(resp.Metadata, &srv)
	})
	if err != nil {
		return srv, fmt.Errorf("%s %w", name, err)
	}
	return srv, nil
}

type serverInfo struct {
	Auth          string   `json:"auth"`
	APIExtensions []string `json:"api_extensions"`
	Environment   struct {
		Server                 string `json:"server"`
		ServerVersion          string `json:"server_version"`
		Certificate            string `json:"certificate"`
		CertificateFingerprint string `json:"certificate_fingerprint"`
		Driver                 string `json:"driver"`
	} `json:"environment"`
}

// setup creates the storage pool and root disk, imports the image,
// enables HTTPS and trusts a new client certificate, all over REST.
func (d *Incus) setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := d.Do(ctx, http.MethodPost, "/1.0/storage-pools", map[string]any{"name": "default", "driver": "dir"}); err != nil {
		return fmt.Errorf("storage pool: %w", err)
	}
	root := map[string]any{"devices": map[string]any{"root": map[string]string{"type": "disk", "path": "/", "pool": "default"}}}
	if _, err := d.Do(ctx, http.MethodPatch, "/1.0/profiles/default", root); err != nil {
		return fmt.Errorf("default profile: %w", err)
	}
	if err := d.importImage(ctx); err != nil {
		return err
	}
	if err := d.enableHTTPS(ctx); err != nil {
		return err
	}
	return d.checkHTTPS()
}

// importImage imports the test image under d.ImageAlias.
func (d *Incus) importImage(ctx context.Context) error {
	tarball, err := incusimage.Image()
	if err != nil {
		return err
	}
	op, err := d.Do(ctx, http.MethodPost, "/1.0/images", tarball)
	if err != nil {
		return fmt.Errorf("image import: %w", err)
	}
	var meta struct {
		Fingerprint string `json:"fingerprint"`
	}
	if err := json.Unmarshal(op.Metadata, &meta); err != nil || meta.Fingerprint == "" {
		return fmt.Errorf("image import: no fingerprint in %s", op.Metadata)
	}
	d.ImageFingerprint = meta.Fingerprint
	if _, err := d.Do(ctx, http.MethodPost, "/1.0/images/aliases", map[string]string{"name": d.ImageAlias, "target": meta.Fingerprint}); err != nil {
		return fmt.Errorf("image alias: %w", err)
	}
	return nil
}

// enableHTTPS listens on a free local port and trusts a new client
// certificate.
func (d *Incus) enableHTTPS(ctx context.Context) error {
	port := 0
	if l, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	} else {
		return err
	}
	d.HTTPSAddress = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if _, err := d.Do(ctx, http.MethodPatch, "/1.0", map[string]any{"config": map[string]string{"core.https_address": d.HTTPSAddress}}); err != nil {
		return fmt.Errorf("core.https_address: %w", err)
	}
	certPEM, keyPEM, der, err := clientCertificate()
	if err != nil {
		return err
	}
	d.ClientCert, d.ClientKey = certPEM, keyPEM
	if _, err := d.Do(ctx, http.MethodPost, "/1.0/certificates", map[string]string{
		"type": "client", "name": "uplink-test", "certificate": base64.StdEncoding.EncodeToString(der),
	}); err != nil {
		return fmt.Errorf("trust client certificate: %w", err)
	}
	resp, err := d.Query(ctx, http.MethodGet, "/1.0", nil)
	if err != nil {
		return err
	}
	var srv serverInfo
	if err := json.Unmarshal(resp.Metadata, &srv); err != nil {
		return err
	}
	d.ServerCert = []byte(srv.Environment.Certificate)
	return nil
}

// checkHTTPS checks the HTTPS side end to end: the client must be
// trusted.
func (d *Incus) checkHTTPS() error {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: d.TLSConfig()}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	var lastErr error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		r, err := hc.Get("https://" + d.HTTPSAddress + "/1.0")
		if err != nil {
			lastErr = err
			continue
		}
		var env Response
		var srv serverInfo
		err = json.NewDecoder(r.Body).Decode(&env)
		r.Body.Close()
		if err == nil {
			err = json.Unmarshal(env.Metadata, &srv)
		}
		if err == nil && srv.Auth != "trusted" {
			err = fmt.Errorf("HTTPS GET /1.0: auth %q, want trusted", srv.Auth)
		}
		if err == nil {
			return nil
		}
		lastErr = err
	}
	return fmt.Errorf("HTTPS on %s: %v", d.HTTPSAddress, lastErr)
}

// clientCertificate returns a self-signed ECDSA P-384 client certificate
// (CN uplink-test, ecdsa-with-SHA384) and its PKCS#8 key, both PEM, and
// the certificate's DER.
func clientCertificate() (certPEM, keyPEM, der []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "uplink-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		SignatureAlgorithm:    x509.ECDSAWithSHA384,
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), der, nil
}

// TLSConfig returns a client configuration for HTTPSAddress: the trusted
// client certificate, TLS 1.3 only, and the server certificate pinned by
// its SHA-256 fingerprint.
func (d *Incus) TLSConfig() *tls.Config {
	cert, err := tls.X509KeyPair(d.ClientCert, d.ClientKey)
	if err != nil {
		panic(err) // made by clientCertificate
	}
	want := d.ServerFingerprint()
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no server certificate")
			}
			sum := sha256.Sum256(raw[0])
			if hex.EncodeToString(sum[:]) != want {
				return fmt.Errorf("server certificate %x, want %s", sum, want)
			}
			return nil
		},
	}
}

// ServerFingerprint is the SHA-256 of the server certificate's DER in hex,
// as environment.certificate_fingerprint reports it.
func (d *Incus) ServerFingerprint() string {
	b, _ := pem.Decode(d.ServerCert)
	if b == nil {
		return ""
	}
	sum := sha256.Sum256(b.Bytes)
	return hex.EncodeToString(sum[:])
}

func unixClient(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true, // as the Incus client does on the socket
	}}
}

// HTTPClient returns a client that sends every request to the unix
// socket, whatever the URL's host (use http://unix.socket/1.0/...).
func (d *Incus) HTTPClient() *http.Client { return unixClient(d.Socket) }

// Response is the Incus/LXD response envelope.
type Response struct {
	Type       string          `json:"type"` // sync, async or error
	Status     string          `json:"status"`
	StatusCode int             `json:"status_code"`
	Operation  string          `json:"operation"`
	ErrorCode  int             `json:"error_code"`
	Error      string          `json:"error"`
	Metadata   json.RawMessage `json:"metadata"`
}

// Operation is a background operation (metadata of an async response).
type Operation struct {
	ID         string          `json:"id"`
	Class      string          `json:"class"`
	Status     string          `json:"status"`
	StatusCode int             `json:"status_code"`
	Err        string          `json:"err"`
	Metadata   json.RawMessage `json:"metadata"`
}

// APIError is an error response (or a failed operation).
type APIError struct {
	Method, Path string
	Code         int
	Message      string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Code, e.Message)
}

// Query sends one request over the unix socket and decodes the envelope.
// body is nil, an io.Reader or []byte (sent as application/octet-stream)
// or a value sent as JSON. An error response is returned as *APIError.
func (d *Incus) Query(ctx context.Context, method, path string, body any, header ...http.Header) (*Response, error) {
	var r io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		r, ctype = b, "application/octet-stream"
	case []byte:
		r, ctype = bytes.NewReader(b), "application/octet-stream"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		r, ctype = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://unix.socket"+path, r)
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for _, h := range header {
		for k, v := range h {
			req.Header[k] = v
		}
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var env Response
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%s %s: %s: not an API response: %.200q", method, path, resp.Status, raw)
	}
	if env.Type == "error" {
		code := env.ErrorCode
		if code == 0 {
			code = resp.StatusCode
		}
		return &env, &APIError{Method: method, Path: path, Code: code, Message: env.Error}
	}
	return &env, nil
}

// Do is Query that, for an async response, waits for the operation and
// returns it as a sync response whose Metadata is the operation's
// metadata. A failed operation is an *APIError.
func (d *Incus) Do(ctx context.Context, method, path string, body any, header ...http.Header) (*Response, error) {
	resp, err := d.Query(ctx, method, path, body, header...)
	if err != nil || resp.Type != "async" {
		return resp, err
	}
	op, err := d.Wait(ctx, resp.Operation)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return &Response{Type: "sync", Status: op.Status, StatusCode: op.StatusCode, Metadata: op.Metadata}, nil
}

// Wait waits for the operation at opPath (/1.0/operations/<id>) to end,
// with the robust algorithm of incus-api.md §3 (Incus 6.0.x reports a
// failure or a timeout of /wait as an error body in an HTTP 200).
func (d *Incus) Wait(ctx context.Context, opPath string) (*Operation, error) {
	for {
		resp, err := d.Query(ctx, http.MethodGet, opPath+"/wait?timeout=30", nil)
		var op Operation
		if err == nil {
			if err := json.Unmarshal(resp.Metadata, &op); err != nil {
				return nil, err
			}
			if op.StatusCode < 200 {
				continue
			}
			if op.Err != "" || op.StatusCode == 400 || op.StatusCode == 401 {
				return &op, &APIError{Method: "operation", Path: opPath, Code: op.StatusCode, Message: op.Err}
			}
			return &op, nil
		}
		var apiErr *APIError
		if !errors.As(err, &apiErr) {
			return nil, err
		}
		if strings.Contains(apiErr.Message, "context deadline exceeded") {
			continue
		}
		// The operation is kept 5 s after it ended: read its final state.
		resp, gerr := d.Query(ctx, http.MethodGet, opPath, nil)
		if gerr != nil || json.Unmarshal(resp.Metadata, &op) != nil {
			return nil, err
		}
		if op.StatusCode < 200 {
			continue
		}
		msg := op.Err
		if msg == "" {
			msg = apiErr.Message
		}
		return &op, &APIError{Method: "operation", Path: opPath, Code: op.StatusCode, Message: msg}
	}
}

// logTail returns the end of the daemon's log and output.
func (d *Incus) logTail() string {
	var b strings.Builder
	for _, f := range []string{d.Log, strings.TrimSuffix(d.Log, ".log") + ".out"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(data))
		if len(s) > 4000 {
			s = "..." + s[len(s)-4000:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", filepath.Base(f), s)
	}
	return b.String()
}

// LogTail returns the end of the daemon log, for failure messages.
func (d *Incus) LogTail() string { return d.logTail() }

// ---- helpers for tests ----

func (d *Incus) must(t testing.TB, method, path string, body any, header ...http.Header) *Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	resp, err := d.Do(ctx, method, path, body, header...)
	if err != nil {
		t.Fatalf("testenv: %s: %v\n%s", d.Kind, err, d.logTail())
	}
	return resp
}

// Must is Do that fails t on error.
func (d *Incus) Must(t testing.TB, method, path string, body any) *Response {
	t.Helper()
	return d.must(t, method, path, body)
}

// UniqueName returns a fresh instance or project name: prefix, "-" and
// 8 lowercase hex digits.
func UniqueName(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// NewProject creates a project sharing the default project's images and
// profiles and deletes it (and its instances) when t ends.
func (d *Incus) NewProject(t testing.TB) string {
	t.Helper()
	name := UniqueName("t")
	d.must(t, http.MethodPost, "/1.0/projects", map[string]any{
		"name": name,
		"config": map[string]string{
			"features.images": "false", "features.profiles": "false", "features.storage.volumes": "false",
		},
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		resp, err := d.Query(ctx, http.MethodGet, "/1.0/instances?project="+url.QueryEscape(name), nil)
		if err == nil {
			var urls []string
			json.Unmarshal(resp.Metadata, &urls)
			for _, u := range urls {
				// In a project the URLs end in "?project=<name>".
				u, _, _ = strings.Cut(u, "?")
				d.forceDelete(ctx, name, u[strings.LastIndex(u, "/")+1:])
			}
		}
		if _, err := d.Do(ctx, http.MethodDelete, "/1.0/projects/"+name, nil); err != nil {
			t.Errorf("testenv: delete project %s: %v", name, err)
		}
	})
	return name
}

func projectQuery(project string) string {
	if project == "" {
		return ""
	}
	return "project=" + url.QueryEscape(project)
}

func instancePath(project, name, sub string, query ...string) string {
	p := "/1.0/instances/" + url.PathEscape(name) + sub
	q := slices.DeleteFunc(append([]string{projectQuery(project)}, query...), func(s string) bool { return s == "" })
	if len(q) > 0 {
		p += "?" + strings.Join(q, "&")
	}
	return p
}

// HasExtension reports whether GET /1.0 lists the API extension.
func (d *Incus) HasExtension(t testing.TB, ext string) bool {
	t.Helper()
	var srv serverInfo
	if err := json.Unmarshal(d.must(t, http.MethodGet, "/1.0", nil).Metadata, &srv); err != nil {
		t.Fatal(err)
	}
	return slices.Contains(srv.APIExtensions, ext)
}

// Launch creates and starts a container from ImageAlias in project (""
// for default) with extra devices, and force-deletes it when t ends.
func (d *Incus) Launch(t testing.TB, project, name string, devices map[string]map[string]string) {
	t.Helper()
	body := map[string]any{
		"name":     name,
		"type":     "container",
		"profiles": []string{"default"},
		"source":   map[string]string{"type": "image", "alias": d.ImageAlias},
		"devices":  devices,
		"start":    true, // ignored by LXD 5.0: started below
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		d.forceDelete(ctx, project, name)
	})
	d.must(t, http.MethodPost, "/1.0/instances?"+projectQuery(project), body)
	if d.State(t, project, name) != "Running" {
		d.must(t, http.MethodPut, instancePath(project, name, "/state"), map[string]any{"action": "start", "timeout": 30})
	}
	d.WaitBooted(t, project, name)
}

// WaitBooted waits until the test image's init has run its sysinit
// actions (loopback up), which an exec right after start can precede.
func (d *Incus) WaitBooted(t testing.TB, project, name string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if d.Exec(t, project, name, "/bin/test", "-e", incusimage.BootedFile).Return == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: %s: instance %s: %s missing after 30s", d.Kind, name, incusimage.BootedFile)
		}
	}
}

// State returns the instance's status, e.g. "Running" or "Stopped".
func (d *Incus) State(t testing.TB, project, name string) string {
	t.Helper()
	var inst struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(d.must(t, http.MethodGet, instancePath(project, name, ""), nil).Metadata, &inst); err != nil {
		t.Fatal(err)
	}
	return inst.Status
}

func (d *Incus) forceDelete(ctx context.Context, project, name string) {
	d.Do(ctx, http.MethodPut, instancePath(project, name, "/state"), map[string]any{"action": "stop", "force": true, "timeout": -1})
	d.Do(ctx, http.MethodDelete, instancePath(project, name, ""), nil)
}

// ExecResult is the outcome of Exec.
type ExecResult struct {
	Return         int
	Stdout, Stderr string
}

// Exec runs command in the instance with record-output and returns its
// exit status and output. A non-zero exit is not an error.
func (d *Incus) Exec(t testing.TB, project, name string, command ...string) ExecResult {
	t.Helper()
	resp := d.must(t, http.MethodPost, instancePath(project, name, "/exec"), map[string]any{
		"command": command, "environment": map[string]string{"HOME": "/root", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		"wait-for-websocket": false, "interactive": false, "record-output": true,
	})
	var meta struct {
		Return int               `json:"return"`
		Output map[string]string `json:"output"`
	}
	if err := json.Unmarshal(resp.Metadata, &meta); err != nil {
		t.Fatalf("testenv: exec metadata %s: %v", resp.Metadata, err)
	}
	res := ExecResult{Return: meta.Return}
	for fd, dst := range map[string]*string{"1": &res.Stdout, "2": &res.Stderr} {
		p, ok := meta.Output[fd]
		if !ok {
			continue
		}
		if project != "" {
			p += "?" + projectQuery(project)
		}
		*dst = string(d.raw(t, http.MethodGet, p, nil, nil))
		d.raw(t, http.MethodDelete, p, nil, nil)
	}
	return res
}

// raw sends a request and returns the body, failing t on a non-2xx status.
func (d *Incus) raw(t testing.TB, method, path string, body io.Reader, header http.Header) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://unix.socket"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := d.client.Do(req)
	if err != nil {
		t.Fatalf("testenv: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode/100 != 2 {
		t.Fatalf("testenv: %s %s: %s: %s", method, path, resp.Status, b)
	}
	return b
}

// PushFile writes a file in the instance (root-owned, with mode).
func (d *Incus) PushFile(t testing.TB, project, name, path string, data []byte, mode os.FileMode) {
	t.Helper()
	h := http.Header{}
	h.Set("Content-Type", "application/octet-stream")
	for _, prefix := range []string{"X-Incus-", "X-LXD-"} { // LXD reads only X-LXD-*
		h.Set(prefix+"uid", "0")
		h.Set(prefix+"gid", "0")
		h.Set(prefix+"mode", fmt.Sprintf("%04o", mode.Perm()))
		h.Set(prefix+"type", "file")
		h.Set(prefix+"write", "overwrite")
	}
	d.raw(t, http.MethodPost, instancePath(project, name, "/files", "path="+url.QueryEscape(path)), bytes.NewReader(data), h)
}

// ReadFile returns a file's content from the instance.
func (d *Incus) ReadFile(t testing.TB, project, name, path string) []byte {
	t.Helper()
	return d.raw(t, http.MethodGet, instancePath(project, name, "/files", "path="+url.QueryEscape(path)), nil, nil)
}

// ---- teardown ----

// StopDaemons tears down the daemons this process started (instances,
// daemon, mounts, directories) now rather than when the process exits;
// for a TestMain after m.Run. Later Start calls fail.
func StopDaemons() {
	daemonsMu.Lock()
	ds := daemons
	daemons = nil
	daemonsMu.Unlock()
	for _, d := range ds {
		d.teardown(d.proc)
	}
	for _, s := range []*shared{&sharedIncus, &sharedLXD} {
		s.once.Do(func() {})
		s.d, s.err = nil, errors.New("stopped by testenv.StopDaemons")
	}
}

// teardown force-stops all instances, stops the daemon, unmounts what it
// left mounted below Dir and removes Dir and empty lxc.pivot cgroups.
// proc is nil in the reaper, which is not the daemon's parent.
func (d *Incus) teardown(proc *Proc) []string {
	var problems []string
	alive := func() bool {
		if proc != nil {
			return !proc.Exited()
		}
		return processIs(d.pid, d.Kind)
	}
	if alive() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		resp, err := d.Query(ctx, http.MethodGet, "/1.0/instances?all-projects=true&recursion=1", nil)
		if err == nil {
			var insts []struct {
				Name    string `json:"name"`
				Project string `json:"project"`
				Status  string `json:"status"`
			}
			json.Unmarshal(resp.Metadata, &insts)
			for _, in := range insts {
				if in.Status != "Stopped" {
					if _, err := d.Do(ctx, http.MethodPut, instancePath(in.Project, in.Name, "/state"), map[string]any{"action": "stop", "force": true, "timeout": -1}); err != nil {
						problems = append(problems, fmt.Sprintf("stop %s/%s: %v", in.Project, in.Name, err))
					}
				}
			}
		} else {
			problems = append(problems, fmt.Sprintf("list instances: %v", err))
		}
		cancel()
		syscall.Kill(d.pid, syscall.SIGTERM)
		for deadline := time.Now().Add(15 * time.Second); alive() && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		if alive() {
			problems = append(problems, "daemon ignored SIGTERM for 15s: SIGKILL")
			syscall.Kill(d.pid, syscall.SIGKILL)
			for deadline := time.Now().Add(5 * time.Second); alive() && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	for _, m := range mountsBelow(d.Dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			problems = append(problems, fmt.Sprintf("umount %s: %v", m, err))
		}
	}
	removePivots()
	if err := os.RemoveAll(d.Dir); err != nil {
		problems = append(problems, fmt.Sprintf("remove %s: %v", d.Dir, err))
	}
	return problems
}

// processIs reports whether pid runs a program whose command line
// mentions name (guarding against a reused PID).
func processIs(pid int, name string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
			return false // a zombie waiting for its parent
		}
	}
	exe := string(bytes.SplitN(b, []byte{0}, 2)[0])
	return strings.Contains(filepath.Base(exe), name)
}

// mountsBelow returns the mount points at or below dir, deepest first.
func mountsBelow(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.Reverse(out) // mounted later (and deeper) first
	return out
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removePivots removes the empty lxc.pivot cgroups liblxc leaves behind
// (rmdir fails, harmlessly, on one in use).
func removePivots() {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/lxc.pivot")
	dirs = append(dirs, "/sys/fs/cgroup/lxc.pivot")
	for _, d := range dirs {
		syscall.Rmdir(d)
	}
}

// ---- reaper ----

const reaperEnv = "UPLINK_TESTENV_REAPER"

type reaperConfig struct {
	Kind, Dir, Socket string
	PID               int
}

var reaperPipes []*os.File // write ends, open until this process exits

// startReaper re-executes this test binary as a reaper holding the read
// end of a pipe: when this process exits, however it exits, the reaper
// reads EOF and tears the daemon down.
func startReaper(d *Incus) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cfg, _ := json.Marshal(reaperConfig{Kind: d.Kind, Dir: d.Dir, Socket: d.Socket, PID: d.pid})
	log, err := os.Create(d.Dir + ".reaper.log")
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), reaperEnv+"="+string(cfg))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("start reaper: %w", err)
	}
	r.Close()
	go cmd.Wait()
	reaperPipes = append(reaperPipes, w)
	return nil
}

func init() {
	if cfg := os.Getenv(reaperEnv); cfg != "" {
		os.Exit(reap(cfg))
	}
}

func reap(cfgJSON string) int {
	var cfg reaperConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "reaper:", err)
		return 2
	}
	io.Copy(io.Discard, os.Stdin) // EOF: the test binary has exited
	d := &Incus{Kind: cfg.Kind, Dir: cfg.Dir, Socket: cfg.Socket, pid: cfg.PID, client: unixClient(cfg.Socket)}
	problems := d.teardown(nil)
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, "reaper:", p)
	}
	if len(problems) == 0 {
		os.Remove(cfg.Dir + ".reaper.log")
	}
	return 0
}
