package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/server"
	"github.com/uplinkhq/uplink/internal/testenv"
)

// clearUplinkEnv removes every UPLINK_* variable for the test, so that
// the machine's environment cannot change what parse sees.
func clearUplinkEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "UPLINK_") {
			t.Setenv(k, "") // restores the value at the end of the test
			os.Unsetenv(k)
		}
	}
}

// parseServe parses a serve command line like `uplink serve` does.
func parseServe(t *testing.T, args ...string) (server.Config, string, string, error) {
	t.Helper()
	cfg := defaultConfig()
	var level, format string
	fs := serveFlags(&cfg, &level, &format)
	fs.SetOutput(io.Discard)
	pos, err := parse(fs, args)
	if err == nil && len(pos) > 0 {
		err = fmt.Errorf("positional arguments %q", pos)
	}
	return cfg, level, format, err
}

func TestValidateDefaults(t *testing.T) {
	clearUplinkEnv(t)
	cfg, level, format, err := parseServe(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate(&cfg, level, format); err != nil {
		t.Fatalf("the defaults do not validate:\n%v", err)
	}
	// The documented defaults.
	if cfg.Listen != ":4080" || cfg.AdminListen != "127.0.0.1:4040" || cfg.Storage != "filesystem" ||
		cfg.DataDir != "./uplink-data" || cfg.Redis != "" || len(cfg.AdminTokens) != 0 || cfg.Retention != 20 {
		t.Fatalf("defaults differ from API.md: %+v", cfg)
	}
}

func TestValidate(t *testing.T) {
	clearUplinkEnv(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, f := range []string{cert, key} {
		if err := os.WriteFile(f, []byte("pem"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing.pem")

	bad := []struct {
		name string
		args []string
		want []string // each must appear in the message
	}{
		{"listen without a port", []string{"--listen", "localhost"}, []string{"--listen", "localhost"}},
		{"listen with a port out of range", []string{"--listen", ":99999"}, []string{"--listen"}},
		{"admin-listen empty", []string{"--admin-listen", ""}, []string{"--admin-listen"}},
		{"admin-listen garbage", []string{"--admin-listen", "127.0.0.1"}, []string{"--admin-listen"}},
		{"unknown storage", []string{"--storage", "nope"}, []string{"--storage", "nope"}},
		{"s3 without a bucket", []string{"--storage", "s3", "--s3-endpoint", "s3.example.com"}, []string{"--s3-bucket"}},
		{"s3 without an endpoint", []string{"--storage", "s3", "--s3-bucket", "b"}, []string{"--s3-endpoint"}},
		{"s3 endpoint with a scheme", []string{"--storage", "s3", "--s3-bucket", "b", "--s3-endpoint", "https://s3.example.com"}, []string{"--s3-endpoint", "scheme"}},
		{"s3 access key without a secret", []string{"--storage", "s3", "--s3-bucket", "b", "--s3-endpoint", "s3.example.com", "--s3-access-key", "AKIA"}, []string{"--s3-secret-key"}},
		{"tls cert without a key", []string{"--admin-tls-cert", cert}, []string{"--admin-tls-key"}},
		{"tls key without a cert", []string{"--admin-tls-key", key}, []string{"--admin-tls-cert"}},
		{"tls cert that does not exist", []string{"--admin-tls-cert", missing, "--admin-tls-key", key}, []string{"--admin-tls-cert", missing}},
		{"tls key that does not exist", []string{"--admin-tls-cert", cert, "--admin-tls-key", missing}, []string{"--admin-tls-key", missing}},
		{"redis URL without a scheme", []string{"--redis", "localhost:6379"}, []string{"--redis"}},
		{"redis URL with another scheme", []string{"--redis", "http://localhost:6379"}, []string{"--redis"}},
		{"negative redis timeout", []string{"--redis-timeout", "-1s"}, []string{"--redis-timeout"}},
		{"zero redis ttl", []string{"--redis-ttl", "0s"}, []string{"--redis-ttl"}},
		{"negative ref cache ttl", []string{"--ref-cache-ttl", "-5s"}, []string{"--ref-cache-ttl"}},
		{"zero client index ttl", []string{"--client-index-ttl", "0"}, []string{"--client-index-ttl"}},
		{"negative shutdown timeout", []string{"--shutdown-timeout", "-1s"}, []string{"--shutdown-timeout"}},
		{"tiny index cache", []string{"--index-cache-size", "1KiB"}, []string{"--index-cache-size"}},
		{"tiny upload limit", []string{"--max-upload-size", "10"}, []string{"--max-upload-size"}},
		{"zero retention", []string{"--retention", "0"}, []string{"--retention"}},
		{"short admin token", []string{"--admin-token", "0123456789abcdef,short"}, []string{"--admin-token", "16"}},
		{"bad log level", []string{"--log-level", "verbose"}, []string{"--log-level", "verbose"}},
		{"bad log format", []string{"--log-format", "xml"}, []string{"--log-format", "xml"}},
		{"empty data dir", []string{"--data-dir", ""}, []string{"--data-dir"}},
		{"zero storage timeout", []string{"--storage-timeout", "0s"}, []string{"--storage-timeout"}},
		{"huge storage timeout", []string{"--storage-timeout", "1h"}, []string{"--storage-timeout"}},
		{"zero max ranges", []string{"--max-ranges", "0"}, []string{"--max-ranges"}},
		{"short publish grace", []string{"--publish-grace", "10ms"}, []string{"--publish-grace"}},
		{"zero sweep interval", []string{"--sweep-interval", "0s"}, []string{"--sweep-interval"}},
		{"zero spool max age", []string{"--spool-max-age", "0s"}, []string{"--spool-max-age"}},
		{"negative multipart max age", []string{"--s3-multipart-max-age", "-1h"}, []string{"--s3-multipart-max-age"}},
		{"tiny artifact cache", []string{"--artifact-cache-size", "1KiB"}, []string{"--artifact-cache-size must be 0 (off) or at least 1MiB"}},
		{"short redirect expiry", []string{"--s3-redirect-expiry", "59s"}, []string{"--s3-redirect-expiry must be from 1m to 1h"}},
		{"long redirect expiry", []string{"--s3-redirect-expiry", "61m"}, []string{"--s3-redirect-expiry must be from 1m to 1h"}},
		{"redirect without s3", []string{"--s3-redirect"}, []string{"--s3-redirect needs --storage s3"}},
		{"tiny history", []string{"--keep-history", "9"}, []string{"--keep-history must be at least 10"}},
		{"notify url not http", []string{"--notify-url", "http://ok.example/hook", "--notify-url", "ftp://x/y"}, []string{`--notify-url "ftp://x/y": want http(s)://host[:port]/path`}},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			cfg, level, format, err := parseServe(t, c.args...)
			if err != nil {
				t.Fatalf("parse %q: %v", c.args, err)
			}
			err = validate(&cfg, level, format)
			if err == nil {
				t.Fatalf("%q validates", c.args)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q does not name %q", err, w)
				}
			}
			// One mistake, one message.
			if n := strings.Count(err.Error(), "\n") + 1; n != 1 {
				t.Errorf("%d messages for one mistake:\n%v", n, err)
			}
			if strings.Contains(err.Error(), "short\"") || strings.Contains(err.Error(), "0123456789abcdef") {
				t.Errorf("the message shows a token: %v", err)
			}
		})
	}

	t.Run("every mistake at once", func(t *testing.T) {
		cfg, level, format, err := parseServe(t, "--listen", "nowhere", "--storage", "s3", "--log-level", "loud", "--retention", "0")
		if err != nil {
			t.Fatal(err)
		}
		err = validate(&cfg, level, format)
		for _, w := range []string{"--listen", "--s3-bucket", "--s3-endpoint", "--log-level", "--retention"} {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("message %v does not name %s", err, w)
			}
		}
	})

	good := [][]string{
		{"--storage", "s3", "--s3-endpoint", "127.0.0.1:9000", "--s3-bucket", "b", "--s3-tls=false", "--s3-access-key", "a", "--s3-secret-key", "s"},
		{"--admin-tls-cert", cert, "--admin-tls-key", key},
		{"--redis", "redis://127.0.0.1:6379/0"},
		{"--redis", "rediss://cache.example.com:6380"},
		{"--redis", "unix:///run/redis.sock"},
		{"--listen", "[::1]:8080", "--admin-listen", "0.0.0.0:0"},
		{"--admin-token", "0123456789abcdef,fedcba9876543210"},
		{"--log-level", "debug", "--log-format", "json"},
		{"--log-level", "WARN"},
		{"--index-cache-size", "1MiB", "--max-upload-size", "1KiB", "--retention", "1000"},
		{"--publish-grace", "1s", "--sweep-interval", "100ms", "--spool-max-age", "1s", "--s3-multipart-max-age", "1s"},
		{"--artifact-cache-size", "0", "--s3-redirect-expiry", "1m"},
		{"--artifact-cache-size", "1MiB", "--s3-redirect-expiry", "1h"},
		{"--storage", "s3", "--s3-endpoint", "127.0.0.1:9000", "--s3-bucket", "b", "--s3-redirect"},
		{"--keep-history", "10"},
	}
	for _, args := range good {
		cfg, level, format, err := parseServe(t, args...)
		if err != nil {
			t.Fatalf("parse %q: %v", args, err)
		}
		if err := validate(&cfg, level, format); err != nil {
			t.Errorf("%q does not validate: %v", args, err)
		}
	}

	// Values no flag can hold are refused when parsed.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--artifact-cache-size", "-1GiB"}, `invalid value "-1GiB" for flag -artifact-cache-size: not a size (e.g. 256MiB): "-1GiB"`},
		{[]string{"--artifact-cache-size", "lots"}, `invalid value "lots" for flag -artifact-cache-size: not a size (e.g. 256MiB): "lots"`},
	} {
		if _, _, _, err := parseServe(t, c.args...); err == nil || err.Error() != c.want {
			t.Errorf("%q: %v, want %s", c.args, err, c.want)
		}
	}
}

func TestParseEnv(t *testing.T) {
	clearUplinkEnv(t)
	env := map[string]string{
		"UPLINK_LISTEN":           "127.0.0.1:5080",
		"UPLINK_ADMIN_LISTEN":     "127.0.0.1:5040",
		"UPLINK_STORAGE":          "s3",
		"UPLINK_S3_ENDPOINT":      "s3.example.com",
		"UPLINK_S3_BUCKET":        "env-bucket",
		"UPLINK_S3_TLS":           "false",
		"UPLINK_S3_PATH_STYLE":    "true",
		"UPLINK_REDIS":            "redis://127.0.0.1:6379/1",
		"UPLINK_INDEX_CACHE_SIZE": "512MiB",
		"UPLINK_SHUTDOWN_TIMEOUT": "7s",
		"UPLINK_RETENTION":        "5",
		"UPLINK_ALLOW_CIDR":       "10.0.0.0/8, 192.168.1.1",
		"UPLINK_ADMIN_TOKEN":      "env-token-0123456789",
		"UPLINK_LOG_LEVEL":        "debug",
		"UPLINK_ACCESS_LOG":       "false",
		"UPLINK_STORAGE_TIMEOUT":  "2s",
		"UPLINK_MAX_RANGES":       "4",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}

	cfg, level, format, err := parseServe(t)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.Listen, "127.0.0.1:5080"},
		{"admin-listen", cfg.AdminListen, "127.0.0.1:5040"},
		{"storage", cfg.Storage, "s3"},
		{"s3-endpoint", cfg.S3.Endpoint, "s3.example.com"},
		{"s3-bucket", cfg.S3.Bucket, "env-bucket"},
		{"s3-tls", cfg.S3.UseTLS, false},
		{"s3-path-style", cfg.S3.PathStyle, true},
		{"redis", cfg.Redis, "redis://127.0.0.1:6379/1"},
		{"index-cache-size", cfg.IndexCacheSize, int64(512 << 20)},
		{"shutdown-timeout", cfg.ShutdownTimeout, 7 * time.Second},
		{"retention", cfg.Retention, 5},
		{"allow-cidr", fmt.Sprint(cfg.AllowCIDR), fmt.Sprint([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.1/32")})},
		{"admin-token", strings.Join(cfg.AdminTokens, ","), "env-token-0123456789"},
		{"log-level", level, "debug"},
		{"log-format", format, "text"},
		{"access-log", cfg.AccessLog, false},
		{"storage-timeout", cfg.StorageTimeout, 2 * time.Second},
		{"max-ranges", cfg.MaxRanges, 4},
	}
	for _, w := range want {
		if w.got != w.want {
			t.Errorf("from the environment, %s = %v, want %v", w.name, w.got, w.want)
		}
	}
	if err := validate(&cfg, level, format); err != nil {
		t.Errorf("configuration from the environment does not validate: %v", err)
	}

	// The command line wins over the environment, in either flag syntax
	// and also after a positional-free flag run.
	cfg, level, _, err = parseServe(t, "--listen", ":6080", "--s3-bucket=cli-bucket", "-log-level", "warn", "--s3-tls=true", "--retention", "9")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":6080" || cfg.S3.Bucket != "cli-bucket" || level != "warn" || !cfg.S3.UseTLS || cfg.Retention != 9 {
		t.Errorf("command line did not win: listen %q, bucket %q, level %q, tls %v, retention %d", cfg.Listen, cfg.S3.Bucket, level, cfg.S3.UseTLS, cfg.Retention)
	}
	if cfg.AdminListen != "127.0.0.1:5040" || cfg.S3.Endpoint != "s3.example.com" {
		t.Errorf("flags not on the command line lost their environment value: admin-listen %q, endpoint %q", cfg.AdminListen, cfg.S3.Endpoint)
	}

	// A bad value in the environment names the variable.
	t.Setenv("UPLINK_RETENTION", "many")
	if _, _, _, err := parseServe(t); err == nil || !strings.Contains(err.Error(), "UPLINK_RETENTION") {
		t.Errorf("UPLINK_RETENTION=many: %v, want an error naming the variable", err)
	}
	t.Setenv("UPLINK_RETENTION", "5")
	t.Setenv("UPLINK_INDEX_CACHE_SIZE", "huge")
	if _, _, _, err := parseServe(t); err == nil || !strings.Contains(err.Error(), "UPLINK_INDEX_CACHE_SIZE") {
		t.Errorf("UPLINK_INDEX_CACHE_SIZE=huge: %v, want an error naming the variable", err)
	}
}

// TestParseEnvListFlags: for list flags too, the command line replaces
// the environment's value rather than adding to it: an operator who
// overrides UPLINK_ADMIN_TOKEN on the command line must not leave the old
// token valid.
func TestParseEnvListFlags(t *testing.T) {
	clearUplinkEnv(t)
	t.Setenv("UPLINK_ADMIN_TOKEN", "env-token-0123456789")
	t.Setenv("UPLINK_ALLOW_CIDR", "10.0.0.0/8")
	cfg, _, _, err := parseServe(t, "--admin-token", "cli-token-0123456789", "--allow-cidr", "192.168.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.AdminTokens, ","); got != "cli-token-0123456789" {
		t.Errorf("--admin-token on the command line with UPLINK_ADMIN_TOKEN set: tokens %q, want only the command line's", got)
	}
	if got := fmt.Sprint(cfg.AllowCIDR); got != "[192.168.0.0/16]" {
		t.Errorf("--allow-cidr on the command line with UPLINK_ALLOW_CIDR set: %s, want only the command line's", got)
	}
	// Repeating the flag on the command line still appends.
	cfg, _, _, err = parseServe(t, "--admin-token", "cli-token-0123456789", "--admin-token", "cli-token-abcdefghij")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.AdminTokens, ","); got != "cli-token-0123456789,cli-token-abcdefghij" {
		t.Errorf("repeated --admin-token: %q", got)
	}
}

// The binary, built once per test run.
var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// uplinkBinary builds cmd/uplink (with -race when the test itself is).
func uplinkBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "uplink-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "uplink")
		// The chaos tests' hooks (server/chaos_on.go) are compiled in,
		// inert unless a test sets UPLINK_CHAOS_*.
		args := []string{"build", "-tags", "chaoshook", "-o", binPath}
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "-race" && s.Value == "true" {
					args = append(args, "-race")
				}
			}
		}
		args = append(args, ".")
		goBin, err := exec.LookPath("go")
		if err != nil {
			binErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, goBin, args...).CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// cliEnv is the test's environment without UPLINK_* variables, plus extra.
func cliEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "UPLINK_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// runCLI runs the binary to completion in dir.
func runCLI(t *testing.T, dir string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, uplinkBinary(t), args...)
	cmd.Dir, cmd.Env = dir, env
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		code = ee.ExitCode()
	default:
		t.Fatalf("uplink %q: %v\nstderr:\n%s", args, err, errb.String())
	}
	return out.String(), errb.String(), code
}

// serveProc is a running `uplink serve`.
type serveProc struct {
	cmd    *exec.Cmd
	stderr *testenv.Buffer
	done   chan struct{}
	err    error // of Wait, once done is closed
}

func (p *serveProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func startServe(t *testing.T, dir string, env []string, args ...string) *serveProc {
	t.Helper()
	return serveBinary(t, uplinkBinary(t), dir, env, args...)
}

// twoPorts returns two distinct free loopback ports.
func twoPorts(t *testing.T) (int, int) {
	t.Helper()
	for {
		a, b := testenv.FreePort(t), testenv.FreePort(t)
		if a != b {
			return a, b
		}
	}
}

// TestBinary runs the real binary as an operator would: `uplink serve` on
// the embedded defaults, `uplink publish` and `uplink builds` against it,
// and a SIGTERM during a download.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	uplinkBinary(t)
	dir := t.TempDir()
	distPort, admPort := twoPorts(t)
	dist := "http://127.0.0.1:" + strconv.Itoa(distPort)
	adm := "http://127.0.0.1:" + strconv.Itoa(admPort)
	p := startServe(t, dir, cliEnv(
		"UPLINK_LISTEN=127.0.0.1:"+strconv.Itoa(distPort),
		"UPLINK_ADMIN_LISTEN=127.0.0.1:"+strconv.Itoa(admPort),
	))

	hc := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := hc.Get(adm + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			t.Fatalf("/healthz: %s", resp.Status)
		}
		if p.exited() {
			t.Fatalf("uplink serve exited at start-up (%v):\n%s", p.err, p.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("uplink serve not healthy within a minute: %v\n%s", err, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp, err := hc.Get(adm + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %v %v", resp, err)
	}

	// The generated token, kept in ./uplink-data.
	tokenPath := filepath.Join(dir, "uplink-data", server.TokenFile)
	fi, err := os.Stat(tokenPath)
	if err != nil {
		t.Fatalf("no token generated in ./uplink-data: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", tokenPath, fi.Mode().Perm())
	}

	// A repository as CI builds it, with a large package for the SIGTERM
	// check below.
	key := apktest.NewKey(t)
	big := make([]byte, 8<<20)
	rand.Read(big)
	files := apktest.BuildRepository(t, key, apktest.DefaultArch,
		apktest.Package{Name: "hello", Version: "1.0-r0", Description: "test app",
			Files: []apktest.File{{Path: "usr/share/hello/VERSION", Data: []byte("1")}}},
		apktest.Package{Name: "big", Version: "1.0-r0", Description: "large",
			Files: []apktest.File{{Path: "usr/share/big/blob", Data: big}}},
	)
	repo := filepath.Join(t.TempDir(), "repo")
	apktest.WriteDir(t, repo, files)
	commit := fmt.Sprintf("%x", sha256.Sum256([]byte("binary")))[:40]
	cliEnvAddr := cliEnv("UPLINK_ADDR=127.0.0.1:" + strconv.Itoa(admPort))

	// A wrong token is refused and said so.
	if _, stderr, code := runCLI(t, dir, cliEnvAddr, "publish", repo, "--app", "acme/hello", "--commit", commit, "--branch", "main", "--token", "wrong-token-0123456789"); code == 0 || !strings.Contains(stderr, "401") {
		t.Fatalf("publish with a wrong token: exit %d, stderr %q; want non-zero naming the 401", code, stderr)
	}
	// Bad arguments are refused before anything is sent.
	if _, stderr, code := runCLI(t, dir, cliEnvAddr, "publish", repo, "--app", "acme/hello", "--commit", "abc", "--branch", "main"); code == 0 || !strings.Contains(stderr, "--commit") {
		t.Fatalf("publish with a short commit: exit %d, stderr %q", code, stderr)
	}

	stdout, stderr, code := runCLI(t, dir, cliEnvAddr, "publish", repo, "--app", "acme/hello", "--commit", commit, "--branch", "main", "--tag", "v1")
	if code != 0 {
		t.Fatalf("uplink publish: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, commit) {
		t.Errorf("publish output does not name the commit:\n%s", stdout)
	}

	for name, data := range files {
		resp, err := hc.Get(dist + "/distribution/main/acme/hello/" + name)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
			t.Fatalf("GET /distribution/main/acme/hello/%s: %d, %d bytes (%v), want the %d bytes published", name, resp.StatusCode, len(body), err, len(data))
		}
	}

	stdout, stderr, code = runCLI(t, dir, cliEnvAddr, "builds", "acme/hello", "--json")
	if code != 0 {
		t.Fatalf("uplink builds --json: exit %d\n%s", code, stderr)
	}
	var list struct {
		Builds []struct {
			Commit string   `json:"commit"`
			Branch string   `json:"branch"`
			Tags   []string `json:"tags"`
			Archs  []string `json:"archs"`
		} `json:"builds"`
	}
	if err := json.Unmarshal([]byte(stdout), &list); err != nil {
		t.Fatalf("uplink builds --json printed no JSON (%v):\n%s", err, stdout)
	}
	if len(list.Builds) != 1 || list.Builds[0].Commit != commit || list.Builds[0].Branch != "main" ||
		strings.Join(list.Builds[0].Tags, ",") != "v1" || strings.Join(list.Builds[0].Archs, ",") != "x86_64" {
		t.Fatalf("uplink builds --json: %+v, want the one build %s on main tagged v1", list.Builds, commit)
	}
	stdout, _, code = runCLI(t, dir, cliEnvAddr, "builds", "acme/hello", "--branch", "main")
	if code != 0 || !strings.Contains(stdout, commit[:12]) {
		t.Fatalf("uplink builds --branch main: exit %d:\n%s", code, stdout)
	}
	if _, stderr, code := runCLI(t, dir, cliEnvAddr, "builds", "acme/hello", "--branch", "nope"); code == 0 || !strings.Contains(stderr, "404") {
		t.Fatalf("uplink builds --branch nope: exit %d, stderr %q; want non-zero naming the 404", code, stderr)
	}

	// SIGTERM while a download is in flight: the download completes, then
	// the process exits 0.
	bigName := "x86_64/big-1.0-r0.apk"
	want := files[bigName]
	slow := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				// A small receive window keeps most of the file on the
				// server's side while the test reads slowly.
				c.(*net.TCPConn).SetReadBuffer(32 << 10)
			}
			return c, err
		},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, dist+"/distribution/main/acme/hello/"+bigName, nil)
	resp, err := slow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(want)) {
		t.Fatalf("GET %s: %d, Content-Length %d, want 200 and %d", bigName, resp.StatusCode, resp.ContentLength, len(want))
	}
	var got bytes.Buffer
	chunk := make([]byte, 16<<10)
	for range 16 {
		n, err := io.ReadFull(resp.Body, chunk)
		got.Write(chunk[:n])
		if err != nil {
			t.Fatalf("reading the first part: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The server stops taking new connections...
	refused := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(distPort), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(refused) {
			t.Fatal("after SIGTERM, the distribution listener still accepts connections")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// ...but stays up for the download in flight.
	time.Sleep(200 * time.Millisecond)
	if p.exited() {
		t.Fatalf("uplink serve exited (%v) with a download in flight", p.err)
	}
	if _, err := io.Copy(&got, resp.Body); err != nil {
		t.Fatalf("the download in flight broke after SIGTERM, at %d of %d bytes: %v", got.Len(), len(want), err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("the download in flight got %d bytes, not the %d published", got.Len(), len(want))
	}
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatal("uplink serve did not exit within a minute of SIGTERM and the end of the download")
	}
	if p.err != nil {
		t.Fatalf("uplink serve after SIGTERM: %v, want exit status 0\n%s", p.err, p.stderr.String())
	}
}

// TestBinaryUsageErrors: bad configuration and unknown commands exit 2
// with a message on stderr.
func TestBinaryUsageErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	env := cliEnv()

	_, stderr, code := runCLI(t, dir, env, "serve", "--storage", "nope")
	if code != 2 || !strings.Contains(stderr, "--storage") || !strings.Contains(stderr, "nope") {
		t.Fatalf("serve --storage nope: exit %d, stderr %q; want 2 naming --storage", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "uplink-data")); err == nil {
		t.Error("serve with a bad configuration created ./uplink-data")
	}
	// The same mistake through the environment.
	_, stderr, code = runCLI(t, dir, cliEnv("UPLINK_LOG_LEVEL=loud"), "serve")
	if code != 2 || !strings.Contains(stderr, "--log-level") {
		t.Fatalf("UPLINK_LOG_LEVEL=loud serve: exit %d, stderr %q; want 2 naming --log-level", code, stderr)
	}
	_, stderr, code = runCLI(t, dir, env, "frobnicate")
	if code != 2 || !strings.Contains(stderr, "frobnicate") {
		t.Fatalf("unknown command: exit %d, stderr %q; want 2 naming it", code, stderr)
	}
	_, stderr, code = runCLI(t, dir, env)
	if code != 2 || !strings.Contains(stderr, "usage") {
		t.Fatalf("no command: exit %d, stderr %q; want 2 and the usage", code, stderr)
	}
	stdout, _, code := runCLI(t, dir, env, "help")
	if code != 0 || !strings.Contains(stdout, "serve") {
		t.Fatalf("help: exit %d, stdout %q", code, stdout)
	}
}
