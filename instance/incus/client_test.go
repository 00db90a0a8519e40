package incus

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestConnectUnixDialect(t *testing.T) {
	forDialects(t, func(t *testing.T, f *fakeDaemon) {
		c := f.connect()
		if c.Dialect() != f.dialect {
			t.Errorf("Dialect() = %q, want %q", c.Dialect(), f.dialect)
		}
		incus := f.dialect == DialectIncus
		for ext, want := range map[string]bool{"api_filtering": true, "instances_rebuild": incus, "instance_create_start": incus, "nope": false} {
			if c.HasExtension(ext) != want {
				t.Errorf("HasExtension(%q) = %v", ext, !want)
			}
		}
		srv, _, err := c.GetServer(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if srv.Environment.Server != string(f.dialect) || srv.Auth != "trusted" {
			t.Errorf("server = %+v", srv)
		}
	})
}

func TestConnectUnixDefaultSocket(t *testing.T) {
	f := newFake(t, DialectIncus)
	sock := f.listenUnix()
	t.Setenv("INCUS_SOCKET", sock)
	c, err := ConnectIncusUnix(testCtx(t), "", &ConnectionArgs{UserAgent: "uplink-test"})
	if err != nil {
		t.Fatal(err)
	}
	if c.httpUnixPath != sock {
		t.Errorf("socket %q, want %q", c.httpUnixPath, sock)
	}
	f.mu.Lock()
	ua := f.reqs[0].Header.Get("User-Agent")
	f.mu.Unlock()
	if ua != "uplink-test" {
		t.Errorf("User-Agent %q", ua)
	}
	t.Setenv("INCUS_SOCKET", "")
	t.Setenv("INCUS_DIR", "/srv/incus")
	if got := defaultUnixSocket(); got != "/srv/incus/unix.socket" {
		t.Errorf("with INCUS_DIR: %q", got)
	}
}

func TestConnectUntrusted(t *testing.T) {
	f := newFake(t, DialectIncus)
	f.server = untrustedJSON
	_, err := ConnectIncusUnix(testCtx(t), f.listenUnix(), nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Status() != 403 || !strings.Contains(err.Error(), "not authorized") {
		t.Fatalf("err = %v, want a 403", err)
	}
}

func TestConnectNoDaemon(t *testing.T) {
	if _, err := ConnectIncusUnix(testCtx(t), "/tmp/no-such-dir/unix.socket", nil); err == nil {
		t.Fatal("connected to nothing")
	}
}

// TestErrors checks the envelope error cases of the reference (§2).
func TestErrors(t *testing.T) {
	forDialects(t, func(t *testing.T, f *fakeDaemon) {
		f.reply("GET /1.0/instances/gone", 404, errorBody(404, "Instance not found"))
		f.reply("GET /1.0/instances/secret", 403, errorBody(403, "not authorized"))
		f.reply("DELETE /1.0/instances/c1", 400, errorBody(400, "Instance is running"))
		f.reply("PATCH /1.0/instances/c1", 412, errorBody(412, "ETag doesn't match"))
		f.handle("GET /1.0/instances/proxy", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
		})
		f.reply("GET /1.0/instances/garbage", 200, "not json")
		c := f.connect()
		ctx := testCtx(t)

		_, _, err := c.GetInstance(ctx, "gone")
		if !IsNotFound(err) || err.Error() != "Instance not found" {
			t.Errorf("missing instance: %v (IsNotFound %v)", err, IsNotFound(err))
		}
		_, _, err = c.GetInstance(ctx, "secret")
		var se *StatusError
		if !errors.As(err, &se) || se.Status() != 403 || IsNotFound(err) {
			t.Errorf("forbidden: %v", err)
		}
		_, err = c.DeleteInstance(ctx, "c1")
		if !errors.As(err, &se) || se.Status() != 400 || err.Error() != "Instance is running" {
			t.Errorf("delete running: %v", err)
		}
		err = c.PatchInstance(ctx, "c1", InstancePut{Config: map[string]string{"user.x": "x"}}, `"stale"`)
		if !errors.As(err, &se) || se.Status() != 412 {
			t.Errorf("stale etag: %v", err)
		}
		_, _, err = c.GetInstance(ctx, "proxy")
		if !errors.As(err, &se) || se.Status() != 502 {
			t.Errorf("non-JSON error: %v", err)
		}
		if _, _, err = c.GetInstance(ctx, "garbage"); err == nil || errors.As(err, &se) {
			t.Errorf("non-JSON 200: %v", err)
		}
		// An unknown route, e.g. /rebuild on LXD 5.0.2, is a JSON 404.
		if _, err := c.GetNetworkLeases(ctx, "nope"); !IsNotFound(err) || err.Error() != "not found" {
			t.Errorf("unknown route: %v", err)
		}
		if IsNotFound(nil) || IsNotFound(errors.New("Instance not found")) {
			t.Error("IsNotFound of a non-StatusError")
		}
		if !IsNotFound(StatusErrorf(404, "x %d", 1)) || StatusErrorf(500, "").Error() != "Internal Server Error" {
			t.Error("StatusErrorf")
		}
	})
}

// TestProjectParam checks that every instance URL, exec output paths
// included, carries the project of UseProject, and that UseProject leaves
// the original client alone.
func TestProjectParam(t *testing.T) {
	forDialects(t, func(t *testing.T, f *fakeDaemon) {
		out := "/1.0/instances/c1/logs/exec_e1.stdout"
		if f.dialect == DialectIncus {
			out = "/1.0/instances/c1/logs/exec-output/exec_e1.stdout"
		}
		f.reply("GET /1.0/instances", 200, syncBody("["+instanceJSON+"]"))
		f.reply("GET /1.0/instances/c1", 200, syncBody(instanceJSON))
		f.reply("PATCH /1.0/instances/c1", 200, syncBody("{}"))
		f.reply("PUT /1.0/instances/c1/state", 202, asyncBody("s1"))
		f.reply("POST /1.0/instances/c1/exec", 202, asyncBody("e1"))
		f.reply("GET /1.0/operations/s1/wait", 200, syncBody(opJSON("s1", Success, "", "")))
		f.reply("GET /1.0/operations/e1/wait", 200, syncBody(opJSON("e1", Success, "", `{"return":0,"output":{"1":"`+out+`"}}`)))
		f.reply("GET "+out, 200, "hi")
		f.reply("DELETE "+out, 200, syncBody("{}"))
		f.reply("POST /1.0/instances/c1/files", 200, syncBody("{}"))
		f.reply("GET /1.0/instances/c1/files", 200, "x")
		f.reply("DELETE /1.0/instances/c1", 202, asyncBody("s1"))
		base := f.connect()
		c := base.UseProject("acme.app")
		ctx := testCtx(t)

		if _, err := c.GetInstancesWithFilter(ctx, InstanceTypeContainer, []string{"config.user.a=b"}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.GetInstance(ctx, "c1"); err != nil {
			t.Fatal(err)
		}
		if err := c.PatchInstance(ctx, "c1", InstancePut{Config: map[string]string{"user.a": "b"}}, ""); err != nil {
			t.Fatal(err)
		}
		op, err := c.UpdateInstanceState(ctx, "c1", InstanceStatePut{Action: "restart"}, "")
		if err != nil || op.WaitContext(ctx) != nil {
			t.Fatal(err)
		}
		if _, err := c.ExecInstance(ctx, "c1", InstanceExecPost{Command: []string{"true"}}, &InstanceExecArgs{Stdout: io.Discard}); err != nil {
			t.Fatal(err)
		}
		if err := c.CreateInstanceFile(ctx, "c1", "/x", InstanceFileArgs{Content: strings.NewReader("x")}); err != nil {
			t.Fatal(err)
		}
		if rc, _, err := c.GetInstanceFile(ctx, "c1", "/x"); err != nil {
			t.Fatal(err)
		} else {
			rc.Close()
		}
		if op, err = c.DeleteInstance(ctx, "c1"); err != nil {
			t.Fatal(err)
		}
		for _, r := range f.requests() {
			if strings.HasPrefix(r.Path, "/1.0/instances") && !strings.Contains(r.RawQuery, "project=acme.app") {
				t.Errorf("%s %s?%s has no project", r.Method, r.Path, r.RawQuery)
			}
		}
		f.request("GET", out)
		f.request("DELETE", out)

		n := len(f.requests())
		if _, _, err := base.GetInstance(ctx, "c1"); err != nil {
			t.Fatal(err)
		}
		if r := f.requests()[n]; r.RawQuery != "" {
			t.Errorf("UseProject changed the original client: %q", r.RawQuery)
		}
	})
}

// testCert is a self-signed ECDSA P-384 certificate, like the daemons' own
// and the client certificate of the reference (§9.4).
type testCert struct {
	certPEM, keyPEM string
	tls             tls.Certificate
	x509            *x509.Certificate
}

func newTestCert(t *testing.T, cn string, dns []string, usage x509.ExtKeyUsage) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := testCert{
		certPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		keyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
	}
	if c.tls, err = tls.X509KeyPair([]byte(c.certPEM), []byte(c.keyPEM)); err != nil {
		t.Fatal(err)
	}
	c.x509, _ = x509.ParseCertificate(der)
	return c
}

// serveTLS serves the fake over HTTPS like a daemon: its own self-signed
// certificate (named after a host, not the address we dial); any client
// certificate is accepted by TLS and then checked against the trusted one,
// an untrusted client getting "auth":"untrusted" and 403s.
func (f *fakeDaemon) serveTLS(server, trusted testCert, maxVersion uint16) string {
	f.trusted = trusted.x509
	srv := httptest.NewUnstartedServer(f)
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{server.tls},
		ClientAuth:   tls.RequestClientCert,
		MaxVersion:   maxVersion,
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are expected
	srv.StartTLS()
	f.t.Cleanup(srv.Close)
	return srv.URL
}

func TestTLS(t *testing.T) {
	server := newTestCert(t, "root@vm", []string{"vm"}, x509.ExtKeyUsageServerAuth)
	other := newTestCert(t, "root@other", []string{"vm"}, x509.ExtKeyUsageServerAuth)
	client := newTestCert(t, "uplink-test", nil, x509.ExtKeyUsageClientAuth)
	stranger := newTestCert(t, "stranger", nil, x509.ExtKeyUsageClientAuth)

	f := newFake(t, DialectIncus)
	f.reply("GET /1.0/instances/c1", 200, syncBody(instanceJSON))
	url := f.serveTLS(server, client, 0)
	url12 := newFake(t, DialectIncus).serveTLS(server, client, tls.VersionTLS12)

	args := func(mod func(a *ConnectionArgs)) *ConnectionArgs {
		a := &ConnectionArgs{TLSClientCert: client.certPEM, TLSClientKey: client.keyPEM, TLSServerCert: server.certPEM}
		if mod != nil {
			mod(a)
		}
		return a
	}
	cases := []struct {
		name    string
		url     string
		args    *ConnectionArgs
		wantErr string
	}{
		{"pinned server cert", url, args(nil), ""},
		{"wrong server cert", url, args(func(a *ConnectionArgs) { a.TLSServerCert = other.certPEM }), "certificate"},
		{"no pin, system roots", url, args(func(a *ConnectionArgs) { a.TLSServerCert = "" }), "certificate"},
		{"no client cert", url, args(func(a *ConnectionArgs) { a.TLSClientCert, a.TLSClientKey = "", "" }), "not authorized"},
		{"untrusted client cert", url, args(func(a *ConnectionArgs) {
			a.TLSClientCert, a.TLSClientKey = stranger.certPEM, stranger.keyPEM
		}), "not authorized"},
		{"TLS 1.2 server", url12, args(nil), "protocol version"},
		{"http URL", strings.Replace(url, "https", "http", 1), args(nil), "invalid URL"},
		{"bad client key", url, args(func(a *ConnectionArgs) { a.TLSClientKey = other.keyPEM }), "client certificate"},
		{"bad server PEM", url, args(func(a *ConnectionArgs) { a.TLSServerCert = "junk" }), "server certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ConnectIncus(testCtx(t), tc.url, tc.args)
			if tc.wantErr != "" {
				t.Log(err)
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Dialect() != DialectIncus {
				t.Errorf("dialect %q", c.Dialect())
			}
			if _, _, err := c.GetInstance(testCtx(t), "c1"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestTLSConfig(t *testing.T) {
	server := newTestCert(t, "root@vm", []string{"vm", "vm.lan"}, x509.ExtKeyUsageServerAuth)
	cfg, err := tlsConfig(&ConnectionArgs{TLSServerCert: server.certPEM})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS13 || cfg.ServerName != "vm" || cfg.InsecureSkipVerify {
		t.Errorf("config: min %x, name %q, insecure %v", cfg.MinVersion, cfg.ServerName, cfg.InsecureSkipVerify)
	}
}
