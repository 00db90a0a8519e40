package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/testenv"
)

// The values TestHealthcheck stamps into its binary.
const (
	stampVersion  = "v9.8.7-stamped"
	stampRevision = "0123456789ab-dirty"
	stampDate     = "2026-11-29T12:00:00Z"
)

// stampedBinary builds cmd/uplink the way make build and the Dockerfile
// do: the version stamped with -ldflags -X.
func stampedBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "uplink")
	pkg := "github.com/uplinkhq/uplink/internal/version"
	ldflags := fmt.Sprintf("-X %s.Version=%s -X %s.Revision=%s -X %s.BuildDate=%s",
		pkg, stampVersion, pkg, stampRevision, pkg, stampDate)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-ldflags", ldflags, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// healthcheck runs `bin healthcheck args...` with env as an operator or
// Docker would, and returns its output and exit code.
func runHealthcheck(t *testing.T, bin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"healthcheck"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

// waitAnswers waits until url answers anything but a connection error.
func waitAnswers(t *testing.T, p *serveProc, hc *http.Client, url string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("uplink did not start (%v):\n%s", err, p.stderr.String())
		}
	}
}

// TestHealthcheck runs `uplink healthcheck` against a real `uplink
// serve`, ready, draining and stopped, over http and https; and reads the
// stamped version back from /metrics.
func TestHealthcheck(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := stampedBinary(t)
	listen, _, admin := listenEnv(t)
	_, port, _ := net.SplitHostPort(admin)
	p := serveBinary(t, bin, t.TempDir(), cliEnv(append(listen, "UPLINK_ACCESS_LOG=false")...), "--drain-delay", "30s")
	waitAnswers(t, p, http.DefaultClient, "http://"+admin+"/readyz")

	out, errOut, code := runHealthcheck(t, bin, cliEnv(), "--addr", "http://"+admin)
	if code != 0 || !strings.Contains(out, `"status":"ok"`) {
		t.Errorf("ready server: exit %d, stdout %q, stderr %q; want 0 and /readyz's body", code, out, errOut)
	}
	// The image's way: no flags, the listener serve reads from the
	// environment, its wildcard host reached on loopback.
	if _, errOut, code := runHealthcheck(t, bin, cliEnv("UPLINK_ADMIN_LISTEN=:"+port)); code != 0 {
		t.Errorf("UPLINK_ADMIN_LISTEN=:%s, no flags: exit %d, stderr %q; want 0", port, code, errOut)
	}
	if _, errOut, code := runHealthcheck(t, bin, cliEnv("UPLINK_ADMIN_LISTEN=0.0.0.0:"+port), "--timeout", "2s"); code != 0 {
		t.Errorf("UPLINK_ADMIN_LISTEN=0.0.0.0:%s: exit %d, stderr %q; want 0", port, code, errOut)
	}

	want := fmt.Sprintf(`uplink_build_info{goversion=%q,revision=%q,version=%q} 1`, runtime.Version(), stampRevision, stampVersion)
	if got := scrapeSeries(t, "http://"+admin+"/metrics", "uplink_build_info"); got != want {
		t.Errorf("/metrics: %q, want %q", got, want)
	}

	// SIGTERM: /readyz answers 503 for --drain-delay, then nothing.
	p.cmd.Process.Signal(syscall.SIGTERM)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, errOut, code = runHealthcheck(t, bin, cliEnv(), "--addr", admin)
		if code != 0 || time.Now().After(deadline) {
			break
		}
	}
	if code != 1 || !strings.Contains(errOut, "503") || !strings.Contains(errOut, "draining") {
		t.Errorf("draining server: exit %d, stderr %q; want 1 naming the 503 and why", code, errOut)
	}
	p.cmd.Process.Kill()
	<-p.done
	_, errOut, code = runHealthcheck(t, bin, cliEnv(), "--addr", admin)
	if code != 1 || !strings.Contains(errOut, "connection refused") || !strings.Contains(errOut, admin+"/readyz") {
		t.Errorf("stopped server: exit %d, stderr %q; want 1 naming the URL and the refusal", code, errOut)
	}

	t.Run("tls", func(t *testing.T) { testHealthcheckTLS(t, bin) })
}

// testHealthcheckTLS: an admin listener with a self-signed certificate is
// healthy with --cacert or --insecure-skip-verify, and only then.
func testHealthcheckTLS(t *testing.T, bin string) {
	dir := t.TempDir()
	cert, key, _ := testenv.SelfSigned(t, dir)
	listen, _, admin := listenEnv(t)
	_, port, _ := net.SplitHostPort(admin)
	p := serveBinary(t, bin, dir, cliEnv(append(listen, "UPLINK_ACCESS_LOG=false")...), "--admin-tls-cert", cert, "--admin-tls-key", key)
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	waitAnswers(t, p, insecure, "https://"+admin+"/readyz")

	for _, c := range []struct {
		name string
		env  []string
		args []string
		code int
		say  string // in stderr when code is 1
	}{
		{"--cacert", nil, []string{"--addr", admin, "--cacert", cert}, 0, ""},
		{"--insecure-skip-verify", nil, []string{"--addr", admin, "--insecure-skip-verify"}, 0, ""},
		{"https URL, system roots only", nil, []string{"--addr", "https://" + admin}, 1, "certificate"},
		{"plain http to the TLS listener", nil, []string{"--addr", admin}, 1, "400"},
		{"the image's environment with TLS", []string{"UPLINK_ADMIN_LISTEN=:" + port, "UPLINK_ADMIN_TLS_CERT=" + cert, "UPLINK_CACERT=" + cert}, nil, 0, ""},
		{"--cacert that does not exist", nil, []string{"--addr", admin, "--cacert", cert + ".missing"}, 1, "--cacert"},
		{"--cacert with no certificate", nil, []string{"--addr", admin, "--cacert", key}, 1, "no PEM certificate"},
	} {
		_, errOut, code := runHealthcheck(t, bin, cliEnv(c.env...), c.args...)
		if code != c.code || !strings.Contains(errOut, c.say) {
			t.Errorf("%s: exit %d, stderr %q; want %d saying %q", c.name, code, errOut, c.code, c.say)
		}
	}
}

// scrapeSeries is the one line of /metrics for name, labels included.
func scrapeSeries(t *testing.T, url, name string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var found []string
	for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
		if strings.HasPrefix(sc.Text(), name+"{") || strings.HasPrefix(sc.Text(), name+" ") {
			found = append(found, sc.Text())
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d series named %s: %q", url, len(found), name, found)
	}
	return found[0]
}

// TestHealthcheckUsage: bad command lines are usage errors (exit 2),
// -h is help (exit 0), neither touches the network.
func TestHealthcheckUsage(t *testing.T) {
	clearUplinkEnv(t)
	for _, c := range []struct {
		args []string
		code int
		say  string
	}{
		{[]string{"-h"}, 0, "usage: uplink healthcheck"},
		{[]string{"--timeout", "0s"}, 2, "--timeout must be positive"},
		{[]string{"--timeout", "soon"}, 2, "invalid value"},
		{[]string{"extra"}, 2, "takes no arguments"},
		{[]string{"--bogus"}, 2, "-bogus"},
	} {
		var stdout, stderr bytes.Buffer
		code := cmdHealthcheck(c.args, &stdout, &stderr)
		if code != c.code || !strings.Contains(stdout.String()+stderr.String(), c.say) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d saying %q", c.args, code, stdout.String(), stderr.String(), c.code, c.say)
		}
	}
	t.Setenv("UPLINK_TIMEOUT", "-1s")
	if code := cmdHealthcheck(nil, new(bytes.Buffer), new(bytes.Buffer)); code != 2 {
		t.Errorf("UPLINK_TIMEOUT=-1s: exit %d, want 2", code)
	}
}

// TestHealthcheckAddr: where healthcheck looks without --addr.
func TestHealthcheckAddr(t *testing.T) {
	clearUplinkEnv(t)
	for _, c := range []struct {
		env  map[string]string
		f    healthcheckFlags
		want string
	}{
		{nil, healthcheckFlags{}, "http://127.0.0.1:4040"},
		{map[string]string{"UPLINK_ADMIN_LISTEN": ":4040"}, healthcheckFlags{}, "http://127.0.0.1:4040"},
		{map[string]string{"UPLINK_ADMIN_LISTEN": "[::]:9000"}, healthcheckFlags{}, "http://127.0.0.1:9000"},
		{map[string]string{"UPLINK_ADMIN_LISTEN": "10.1.2.3:9000", "UPLINK_ADMIN_TLS_CERT": "/c.pem"}, healthcheckFlags{}, "https://10.1.2.3:9000"},
		{map[string]string{"UPLINK_ADMIN_LISTEN": ":9000"}, healthcheckFlags{addr: "uplink:4040"}, "http://uplink:4040"},
		{nil, healthcheckFlags{addr: "uplink:4040", insecure: true}, "https://uplink:4040"},
		{nil, healthcheckFlags{addr: "http://uplink:4040", cacert: "ca.pem"}, "http://uplink:4040"},
	} {
		for k, v := range c.env {
			t.Setenv(k, v)
		}
		if got := c.f.baseURL(); got != c.want {
			t.Errorf("env %v, flags %+v: %q, want %q", c.env, c.f, got, c.want)
		}
		for k := range c.env {
			os.Unsetenv(k)
		}
	}
}

// dockerignore is .dockerignore's patterns, compiled the way Docker
// reads them (github.com/moby/patternmatcher): anchored at the context's
// root, * and ? within a path element, ** across them, a pattern that
// matches a directory excludes everything under it, later lines win, !
// re-includes.
type dockerignore []struct {
	re     *regexp.Regexp
	negate bool
}

func readDockerignore(t *testing.T, path string) dockerignore {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dockerignore
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		negate := strings.HasPrefix(line, "!")
		line = strings.TrimPrefix(filepath.Clean(strings.TrimPrefix(line, "!")), "/")
		var re strings.Builder
		for i := 0; i < len(line); i++ {
			switch {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(".*")
				i++
			case line[i] == '*':
				re.WriteString("[^/]*")
			case line[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(line[i : i+1]))
			}
		}
		d = append(d, struct {
			re     *regexp.Regexp
			negate bool
		}{regexp.MustCompile("^" + re.String() + "$"), negate})
	}
	return d
}

// excludes reports whether the build context leaves path out.
func (d dockerignore) excludes(path string) bool {
	out := false
	for _, p := range d {
		for dir := path; dir != "."; dir = filepath.Dir(dir) {
			if p.re.MatchString(dir) {
				out = !p.negate
				break
			}
		}
	}
	return out
}

// TestDockerignore: the image's build context has no history, data,
// screenshots, benchmark output or editor files, and still every file
// the build of cmd/uplink reads.
func TestDockerignore(t *testing.T) {
	d := readDockerignore(t, "../../.dockerignore")
	for _, p := range []string{
		".git", ".git/HEAD", ".git/objects/pack/x.pack", "uplink-data", "uplink-data/meta/admin-token",
		"cmd/uplink/uplink-data/x", "test-screenshots/console.png", "internal/bench/out/report.md",
		"bin/uplink", "uplink", "cmd/uplink/.healthcheck.go.swp", "README.md~", ".idea/workspace.xml",
		".vscode/settings.json", "internal/.DS_Store",
	} {
		if !d.excludes(p) {
			t.Errorf("the build context includes %s", p)
		}
	}
	needed := []string{"go.mod", "go.sum"}
	cmd := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}
{{end}}{{end}}{{end}}`, ".")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, _ := filepath.Abs("../..")
	for _, f := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, f)
		if err != nil {
			t.Fatal(err)
		}
		needed = append(needed, rel)
	}
	if len(needed) < 20 {
		t.Fatalf("go list found only %q", needed)
	}
	for _, p := range needed {
		if d.excludes(p) {
			t.Errorf("the build context leaves out %s, which the build needs", p)
		}
	}
}

// TestDockerImage builds the image and runs it: --version says what the
// build arguments stamped, and the container's health turns "healthy"
// through its HEALTHCHECK. Without a Docker daemon it is skipped, and
// TestHealthcheck covers the command against a real uplink.
func TestDockerImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the container image")
	}
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		t.Skipf("SKIP: no Docker daemon (docker info: %v: %s): the image is not built here; TestHealthcheck runs `uplink healthcheck` against a real uplink instead",
			err, lastLine(out))
	}
	docker := func(timeout time.Duration, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	tag := "uplink-test:" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if out, err := docker(20*time.Minute, "build", "--build-arg", "VERSION="+stampVersion, "--build-arg", "REVISION="+stampRevision,
		"--build-arg", "BUILD_DATE="+stampDate, "-t", tag, "../.."); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { docker(time.Minute, "rmi", "-f", tag) })

	out, err := docker(time.Minute, "run", "--rm", tag, "--version")
	if err != nil || !strings.Contains(out, stampVersion) || !strings.Contains(out, stampRevision) || !strings.Contains(out, stampDate) {
		t.Errorf("uplink --version in the image: %v, %q; want %s (%s, built %s)", err, out, stampVersion, stampRevision, stampDate)
	}

	id, err := docker(time.Minute, "run", "-d", "--health-interval", "1s", tag)
	if err != nil {
		t.Fatalf("docker run: %v\n%s", err, id)
	}
	t.Cleanup(func() { docker(time.Minute, "rm", "-f", id) })
	var health string
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		if health, _ = docker(time.Minute, "inspect", "-f", "{{.State.Health.Status}}", id); health == "healthy" {
			return
		}
	}
	logs, _ := docker(time.Minute, "logs", id)
	probes, _ := docker(time.Minute, "inspect", "-f", "{{json .State.Health}}", id)
	t.Fatalf("container health %q after 2 minutes, want healthy\nhealth: %s\nlogs:\n%s", health, probes, logs)
}

// lastLine is where docker info says why it cannot reach the daemon.
func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
