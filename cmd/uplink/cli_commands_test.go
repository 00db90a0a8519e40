package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/server"
	"github.com/uplinkhq/uplink/internal/version"
)

// uplinkCLI runs a whole command line in-process.
func uplinkCLI(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = execute(args, &out, &errb)
	return out.String(), errb.String(), code
}

// cliPublish publishes one build of acme/hello with package hello at
// version on branch, signed by key, through `uplink publish`; its commit.
func cliPublish(t *testing.T, flags []string, key apktest.Key, label, branch, version string) string {
	t.Helper()
	repo := filepath.Join(t.TempDir(), "repo")
	apktest.WriteDir(t, repo, apktest.BuildRepository(t, key, apktest.DefaultArch, apktest.Package{Name: "hello", Version: version}))
	commit := sha(label)
	args := append([]string{"publish", repo, "--app", "acme/hello", "--commit", commit, "--branch", branch}, flags...)
	if out, errOut, code := uplinkCLI(args...); code != 0 {
		t.Fatalf("publish %s: exit %d\n%s%s", label, code, out, errOut)
	}
	return commit
}

// TestCLIInstallationsCreateRm: `installations create` with the key read
// from its file, followed to the end; a change while an operation runs
// exits 3 (busy); `installations rm` removes it.
func TestCLIInstallationsCreateRm(t *testing.T) {
	clearUplinkEnv(t)
	flags := inProcess(t, func(cfg *server.Config) {
		cfg.NoBackendDelay = 150 * time.Millisecond
		cfg.OperationScan = 100 * time.Millisecond
		cfg.DistributionURL = "http://uplink:4080"
	})
	key := apktest.NewKey(t)
	a := cliPublish(t, flags, key, "A", "main", "1.0-r0")
	b := cliPublish(t, flags, key, "B", "main", "2.0-r0")
	keyFile := filepath.Join(t.TempDir(), key.Name)
	if err := os.WriteFile(keyFile, key.PublicPEM(), 0o644); err != nil {
		t.Fatal(err)
	}

	create := append([]string{"installations", "create", "web", "--app", "acme/hello", "--package", "hello", "--branch", "main",
		"--count", "2", "--image", "alpine/3.21", "--public-key-file", keyFile, "--profile", "default,extra"}, flags...)
	out, errOut, code := uplinkCLI(create...)
	if code != 0 || !strings.Contains(out, "created installation web\n") || !strings.Contains(out, "succeeded") {
		t.Fatalf("installations create: exit %d\n%s%s", code, out, errOut)
	}
	out, _, code = uplinkCLI(append([]string{"installations", "web", "--json"}, flags...)...)
	var v api.Installation
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil {
		t.Fatalf("installations web --json: exit %d %s", code, out)
	}
	if v.ResolvedCommit != b || v.Instances.Count != 2 || v.Instances.Image != "alpine/3.21" || v.KeyName != key.Name ||
		strings.Join(v.Instances.Profiles, ",") != "default,extra" || v.PublicKey != string(key.PublicPEM()) {
		t.Fatalf("the installation created: %+v", v)
	}

	// The same command again changes nothing: no operation to follow.
	out, errOut, code = uplinkCLI(create...)
	if code != 0 || strings.Contains(out, "installation web\n") || strings.Contains(out, "web.2") || !strings.Contains(out, "last operation:  web.1 change-channel succeeded") {
		t.Fatalf("installations create again: exit %d\n%s%s", code, out, errOut)
	}

	// A change that runs a while; another change meanwhile is busy.
	out, errOut, code = uplinkCLI(append([]string{"channel", "web", "--commit", a, "--no-wait"}, flags...)...)
	id := strings.TrimSpace(out)
	if code != 0 || id == "" {
		t.Fatalf("channel --no-wait: exit %d\n%s%s", code, out, errOut)
	}
	_, errOut, code = uplinkCLI(append([]string{"channel", "web", "--branch", "main"}, flags...)...)
	if code != exitBusy || !strings.Contains(errOut, "operation "+id+" is running") {
		t.Fatalf("channel while %s runs: exit %d, want 3\n%s", id, code, errOut)
	}
	_, errOut, code = uplinkCLI(append([]string{"installations", "rm", "web"}, flags...)...)
	if code != exitBusy || !strings.Contains(errOut, id) {
		t.Fatalf("installations rm while %s runs: exit %d, want 3\n%s", id, code, errOut)
	}
	if out, errOut, code = uplinkCLI(append([]string{"ops", "watch", id}, flags...)...); code != 0 {
		t.Fatalf("ops watch %s: exit %d\n%s%s", id, code, out, errOut)
	}

	out, errOut, code = uplinkCLI(append([]string{"installations", "rm", "web"}, flags...)...)
	if code != 0 || !strings.Contains(out, "delete web") || !strings.Contains(out, "succeeded") {
		t.Fatalf("installations rm: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code = uplinkCLI(append([]string{"installations", "web"}, flags...)...); code != exitFailed || !strings.Contains(errOut, "404") {
		t.Fatalf("installations web after rm: exit %d\n%s", code, errOut)
	}

	// Bad command lines never reach the server.
	for _, args := range [][]string{
		{"installations", "create", "web", "--app", "acme/hello", "--package", "hello"},
		{"installations", "create", "web", "--app", "acme/hello", "--package", "hello", "--branch", "main", "--tag", "v1"},
		{"installations", "create", "web", "--app", "acme", "--package", "hello", "--branch", "main"},
		{"installations", "create", "web", "--app", "acme/hello", "--branch", "main"},
		{"installations", "create", "--app", "acme/hello", "--package", "hello", "--branch", "main"},
		{"installations", "rm"},
		{"installations", "create", "web", "--count", "many"},
	} {
		if _, errOut, code := uplinkCLI(append(args, flags...)...); code != exitUsage || !strings.Contains(errOut, "usage: uplink installations") {
			t.Errorf("%q: exit %d, want 2 with the usage:\n%s", args, code, errOut)
		}
	}
}

// TestCLIRefs: tags add and rm, builds rm and branches rm (refused while
// in use, naming the user), prune with and without --dry-run.
func TestCLIRefs(t *testing.T) {
	clearUplinkEnv(t)
	flags := inProcess(t)
	key := apktest.NewKey(t)
	a := cliPublish(t, flags, key, "refs-A", "main", "1.0-r0")
	b := cliPublish(t, flags, key, "refs-B", "main", "2.0-r0")
	cliPublish(t, flags, key, "refs-C", "feature", "3.0-r0")
	cli := func(args ...string) (string, string, int) { return uplinkCLI(append(args, flags...)...) }

	if out, errOut, code := cli("tags", "add", "acme/hello", "v1", a[:8]); code != 0 || !strings.Contains(out, "tag v1 of acme/hello") {
		t.Fatalf("tags add: exit %d\n%s%s", code, out, errOut)
	}
	out, _, code := cli("builds", "acme/hello", "--json")
	var list api.Builds
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil {
		t.Fatalf("builds --json: exit %d %s", code, out)
	}
	tagged := map[string]string{}
	for _, bd := range list.Builds {
		tagged[bd.Commit] = strings.Join(bd.Tags, ",")
	}
	if tagged[a] != "v1" {
		t.Fatalf("after tags add, the builds' tags: %v", tagged)
	}
	// A build a tag names is in use.
	if _, errOut, code := cli("builds", "rm", "acme/hello", a); code != exitFailed || !strings.Contains(errOut, "409") || !strings.Contains(errOut, "v1") {
		t.Fatalf("builds rm of a tagged build: exit %d\n%s", code, errOut)
	}
	if out, errOut, code := cli("tags", "rm", "acme/hello", "v1"); code != 0 || !strings.Contains(out, "removed tag v1") {
		t.Fatalf("tags rm: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := cli("tags", "rm", "acme/hello", "v1"); code != exitFailed || !strings.Contains(errOut, "404") {
		t.Fatalf("tags rm of a gone tag: exit %d\n%s", code, errOut)
	}
	if out, errOut, code := cli("builds", "rm", "acme/hello", a); code != 0 || !strings.Contains(out, "deleted build") {
		t.Fatalf("builds rm: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := cli("branches", "rm", "acme/hello", "feature"); code != 0 || !strings.Contains(out, "removed branch feature") {
		t.Fatalf("branches rm: exit %d\n%s%s", code, out, errOut)
	}

	// prune --dry-run lists what prune then deletes.
	out, errOut, code := cli("prune", "acme/hello", "--dry-run", "--json")
	var dry api.PruneReport
	if code != 0 || json.Unmarshal([]byte(out), &dry) != nil || !dry.DryRun {
		t.Fatalf("prune --dry-run --json: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = cli("prune", "acme/hello", "--dry-run")
	if code != 0 || !strings.Contains(out, "would delete "+strconv.Itoa(len(dry.Deleted))+" builds") {
		t.Fatalf("prune --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = cli("prune", "acme/hello", "--json")
	var real api.PruneReport
	if code != 0 || json.Unmarshal([]byte(out), &real) != nil || real.DryRun || len(real.Deleted) != len(dry.Deleted) {
		t.Fatalf("prune --json: exit %d, %+v after a dry run of %+v\n%s", code, real, dry, errOut)
	}
	for i := range dry.Deleted {
		if real.Deleted[i].Commit != dry.Deleted[i].Commit || real.Deleted[i].Commit == b {
			t.Fatalf("prune deleted %+v, the dry run listed %+v (main's head %s must stay)", real.Deleted, dry.Deleted, b)
		}
	}

	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"tags", "add", "acme/hello", "v2"}, "tags add takes 3 arguments"},
		{[]string{"tags"}, "name a subcommand: add or rm"},
		{[]string{"tags", "move", "acme/hello"}, `unknown subcommand "move"`},
		{[]string{"branches", "rm", "acme/hello"}, "branches rm takes 2 arguments"},
		{[]string{"builds", "rm", "acme/hello"}, "builds rm takes 2 arguments"},
		{[]string{"prune"}, "prune takes 1 argument"},
		{[]string{"prune", "acme/hello", "--dry-rum"}, "unknown flag: --dry-rum"},
	} {
		if _, errOut, code := cli(tc.args...); code != exitUsage || !strings.Contains(errOut, tc.says) || !strings.Contains(errOut, "usage: uplink") {
			t.Errorf("%q: exit %d, want 2 saying %q:\n%s", tc.args, code, tc.says, errOut)
		}
	}
	if _, errOut, code := cli("tags", "add", "acme", "v2", b); code != exitFailed || !strings.Contains(errOut, "<org>/<app>") {
		t.Errorf("tags add with a bad app: exit %d\n%s", code, errOut)
	}
}

// TestCLIGlobalFlags: the global flags work before the command as after
// it, and from the environment.
func TestCLIGlobalFlags(t *testing.T) {
	clearUplinkEnv(t)
	flags := inProcess(t)
	key := apktest.NewKey(t)
	commit := cliPublish(t, flags, key, "global", "main", "1.0-r0")
	for _, args := range [][]string{
		append(append([]string{"--json"}, flags...), "builds", "acme/hello"),
		append(append([]string{}, flags...), "builds", "--json", "acme/hello"),
		append([]string{"builds", "acme/hello", "--json"}, flags...),
	} {
		out, errOut, code := uplinkCLI(args...)
		var list api.Builds
		if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Builds) != 1 || list.Builds[0].Commit != commit {
			t.Errorf("%q: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	t.Setenv("UPLINK_ADDR", flags[1])
	t.Setenv("UPLINK_TOKEN", flags[3])
	t.Setenv("UPLINK_JSON", "true")
	if out, errOut, code := uplinkCLI("builds", "acme/hello"); code != 0 || !strings.HasPrefix(out, "{") {
		t.Errorf("from the environment: exit %d\n%s%s", code, out, errOut)
	}
	t.Setenv("UPLINK_JSON", "maybe")
	if _, errOut, code := uplinkCLI("builds", "acme/hello"); code != exitUsage || !strings.Contains(errOut, "UPLINK_JSON") {
		t.Errorf("a bad UPLINK_JSON: exit %d\n%s", code, errOut)
	}
}

// TestCLIExitCodes: usage errors exit 2, an unreachable server 4.
func TestCLIExitCodes(t *testing.T) {
	clearUplinkEnv(t)
	closed := closedAddr(t)
	for _, args := range [][]string{
		{"builds", "acme/hello"}, {"installations"}, {"channel", "web", "--branch", "main"},
		{"ops", "watch", "web.1"}, {"prune", "acme/hello"}, {"installations", "rm", "web"},
	} {
		_, errOut, code := uplinkCLI(append(args, "--addr", closed, "--token", "t")...)
		if code != exitUnreachable || !strings.Contains(errOut, "connection refused") {
			t.Errorf("%q against a closed port: exit %d, want 4\n%s", args, code, errOut)
		}
	}
	for _, args := range [][]string{
		{}, {"frobnicate"}, {"builds"}, {"builds", "--limit", "x", "acme/hello"}, {"channel", "web"},
		{"ops"}, {"keys", "add", "acme/hello"}, {"--bogus", "installations"}, {"version", "extra"},
		{"builds", "acme/hello", "--cacert", filepath.Join(t.TempDir(), "missing.pem")},
	} {
		_, errOut, code := uplinkCLI(args...)
		if code != exitUsage || !strings.Contains(errOut, "usage: uplink") {
			t.Errorf("%q: exit %d, want 2 with the usage\n%s", args, code, errOut)
		}
	}
	// The exit codes are in the root's help.
	out, _, code := uplinkCLI("--help")
	for _, s := range []string{"exit codes:", "3  busy", "4  unreachable", "installations", "completion", "version"} {
		if code != 0 || !strings.Contains(out, s) {
			t.Errorf("uplink --help lacks %q:\n%s", s, out)
		}
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestCLIHelp: every command has `uplink help <command>` and `<command>
// --help`, the same text, on stdout, exit 0.
func TestCLIHelp(t *testing.T) {
	clearUplinkEnv(t)
	for _, cmd := range [][]string{
		{"publish"}, {"builds"}, {"builds", "rm"}, {"keys"}, {"keys", "add"}, {"installations"}, {"installations", "create"},
		{"installations", "rm"}, {"channel"}, {"ops"}, {"ops", "watch"}, {"history"}, {"tags"}, {"tags", "add"},
		{"branches", "rm"}, {"prune"}, {"version"}, {"completion"}, {"serve"}, {"healthcheck"},
	} {
		viaHelp, errOut, code := uplinkCLI(append([]string{"help"}, cmd...)...)
		if code != 0 || errOut != "" || !strings.Contains(viaHelp, "uplink "+strings.Join(cmd, " ")) {
			t.Errorf("uplink help %s: exit %d\n%s%s", strings.Join(cmd, " "), code, viaHelp, errOut)
		}
		viaFlag, _, code := uplinkCLI(append(cmd, "--help")...)
		if code != 0 || viaFlag != viaHelp {
			t.Errorf("uplink %s --help: exit %d, differs from uplink help:\n%s\n---\n%s", strings.Join(cmd, " "), code, viaFlag, viaHelp)
		}
	}
	out, _, _ := uplinkCLI("help", "installations", "create")
	for _, s := range []string{"--app", "--package", "--public-key-file", "--key-name", "--count", "--image", "--profile", "--project", "--no-wait", "--cacert"} {
		if !strings.Contains(out, s) {
			t.Errorf("installations create --help lacks %s:\n%s", s, out)
		}
	}
}

// TestCLIVersion: --version prints what `version` prints; --json the parts.
func TestCLIVersion(t *testing.T) {
	clearUplinkEnv(t)
	flagOut, _, code := uplinkCLI("--version")
	cmdOut, _, code2 := uplinkCLI("version")
	if code != 0 || code2 != 0 || flagOut != cmdOut || flagOut != version.String()+"\n" || !strings.Contains(flagOut, version.GoVersion()) {
		t.Fatalf("--version (exit %d) %q, version (exit %d) %q", code, flagOut, code2, cmdOut)
	}
	out, _, code := uplinkCLI("version", "--json")
	var v versionInfo
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Version != version.Version || v.Revision != version.Revision ||
		v.BuildDate != version.BuildDate || v.GoVersion != version.GoVersion() {
		t.Fatalf("version --json: exit %d %s", code, out)
	}
}

// TestCLICompletion: the bash, zsh and fish scripts, and the completions
// they ask the binary for name the commands. With bash installed, the
// script completes `uplink ` and `uplink installations ` in a real shell.
func TestCLICompletion(t *testing.T) {
	clearUplinkEnv(t)
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := uplinkCLI("completion", sh)
		if code != 0 || len(out) < 200 || !strings.Contains(out, "uplink") || !strings.Contains(out, "__complete") {
			t.Errorf("completion %s: exit %d, %d bytes\n%s", sh, code, len(out), errOut)
		}
	}
	out, _, code := uplinkCLI("__complete", "")
	for _, cmd := range []string{"serve", "publish", "builds", "installations", "channel", "ops", "tags", "branches", "prune", "version"} {
		if code != 0 || !strings.Contains(out, "\n"+cmd+"\t") && !strings.HasPrefix(out, cmd+"\t") {
			t.Errorf("__complete lacks %s:\n%s", cmd, out)
		}
	}
	out, _, _ = uplinkCLI("__complete", "installations", "")
	if !strings.Contains(out, "create\t") || !strings.Contains(out, "rm\t") {
		t.Errorf("__complete installations:\n%s", out)
	}

	if testing.Short() {
		return
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Log("no bash: the scripts were only checked as text")
		return
	}
	bin := uplinkBinary(t)
	// The scripts build on the bash-completion package; where it is not
	// installed, a stand-in for the one function they call.
	script := `if [ -r /usr/share/bash-completion/bash_completion ]; then source /usr/share/bash-completion/bash_completion; else
_get_comp_words_by_ref() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}; words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }
fi
source <("$UPLINK" completion bash)
compopt() { :; } # only works inside a completion bash runs itself
complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; __start_uplink; echo "${COMPREPLY[@]}"; }
complete_words uplink ""
complete_words uplink installations ""
`
	cmd := exec.Command(bash, "--norc", "-c", script)
	cmd.Env = cliEnv("UPLINK="+bin, "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	outb, err := cmd.CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(outb)), "\n")
	if err != nil || len(lines) != 2 {
		t.Fatalf("bash completion: %v\n%s", err, outb)
	}
	for _, w := range []string{"installations", "channel", "prune", "tags"} {
		if !strings.Contains(" "+lines[0]+" ", " "+w+" ") {
			t.Errorf("bash completes `uplink ` without %s: %q", w, lines[0])
		}
	}
	if !strings.Contains(lines[1], "create") || !strings.Contains(lines[1], "rm") {
		t.Errorf("bash completes `uplink installations ` as %q", lines[1])
	}
}

// privateCA makes a CA and a certificate it signs for 127.0.0.1, in PEM
// files under dir: the CA's, the server's certificate and key.
func privateCA(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "uplink test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "uplink"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for f, b := range map[string]*pem.Block{caFile: {Type: "CERTIFICATE", Bytes: caDER},
		certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// TestCLICACert: against an admin listener whose certificate a private CA
// signed, a command fails (exit 4, naming --cacert) until --cacert (or
// UPLINK_CACERT) names the CA.
func TestCLICACert(t *testing.T) {
	clearUplinkEnv(t)
	caFile, cert, key := privateCA(t, t.TempDir())
	flags := inProcess(t, func(cfg *server.Config) { cfg.AdminTLSCert, cfg.AdminTLSKey = cert, key })
	flags[1] = "https://" + flags[1]

	_, errOut, code := uplinkCLI(append([]string{"installations"}, flags...)...)
	if code != exitUnreachable || !strings.Contains(errOut, "certificate") || !strings.Contains(errOut, "--cacert") {
		t.Fatalf("without --cacert: exit %d, want 4 naming --cacert\n%s", code, errOut)
	}
	out, errOut, code := uplinkCLI(append([]string{"--cacert", caFile, "installations", "--json"}, flags...)...)
	if code != 0 || strings.TrimSpace(out) != "{\n  \"installations\": []\n}" {
		t.Fatalf("with --cacert: exit %d\n%s%s", code, out, errOut)
	}
	t.Setenv("UPLINK_CACERT", caFile)
	if out, errOut, code := uplinkCLI(append([]string{"installations"}, flags...)...); code != 0 {
		t.Fatalf("with UPLINK_CACERT: exit %d\n%s%s", code, out, errOut)
	}
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	if _, errOut, code := uplinkCLI(append([]string{"installations", "--cacert", notPEM}, flags...)...); code != exitUsage || !strings.Contains(errOut, "no PEM certificate") {
		t.Fatalf("--cacert of no certificate: exit %d\n%s", code, errOut)
	}
}

// TestCLIBinaryExitCodes: the binary's exit status itself: 4 for a server
// that is not there, 3 for a busy installation, 2 for a bad command line.
func TestCLIBinaryExitCodes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	dir := t.TempDir()
	env, _, admin := listenEnv(t)
	const token = "exit-token-0123456789abcdef"
	p := startServe(t, dir, cliEnv(append(env, "UPLINK_ADMIN_TOKEN="+token, "UPLINK_NO_BACKEND_STEP_DELAY=300ms",
		"UPLINK_OPERATION_SCAN=100ms", "UPLINK_DISTRIBUTION_URL=http://uplink:4080")...))
	cl := client.New(admin, token)
	waitReady(t, p, cl)
	cenv := cliEnv("UPLINK_ADDR="+admin, "UPLINK_ADMIN_TOKEN="+token)

	key := apktest.NewKey(t)
	repo := filepath.Join(t.TempDir(), "repo")
	apktest.WriteDir(t, repo, apktest.BuildRepository(t, key, apktest.DefaultArch, apktest.Package{Name: "hello", Version: "1.0-r0"}))
	commit := sha("exit-codes")
	if _, errOut, code := runCLI(t, dir, cenv, "publish", repo, "--app", "acme/hello", "--commit", commit, "--branch", "main"); code != 0 {
		t.Fatalf("publish: exit %d\n%s", code, errOut)
	}
	keyFile := filepath.Join(t.TempDir(), key.Name)
	os.WriteFile(keyFile, key.PublicPEM(), 0o644)
	out, errOut, code := runCLI(t, dir, cenv, "installations", "create", "web", "--app", "acme/hello", "--package", "hello",
		"--branch", "main", "--public-key-file", keyFile, "--no-wait")
	id := strings.TrimSpace(out)
	if code != 0 || id == "" {
		t.Fatalf("installations create --no-wait: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := runCLI(t, dir, cenv, "channel", "web", "--commit", commit); code != exitBusy || !strings.Contains(errOut, id) {
		t.Fatalf("channel while %s runs: exit %d, want 3\n%s", id, code, errOut)
	}
	if out, errOut, code := runCLI(t, dir, cenv, "ops", "watch", id); code != 0 {
		t.Fatalf("ops watch: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := runCLI(t, dir, cenv, "installations", "--addr", closedAddr(t)); code != exitUnreachable {
		t.Fatalf("a closed port: exit %d, want 4\n%s", code, errOut)
	}
	if _, errOut, code := runCLI(t, dir, cenv, "installations", "create"); code != exitUsage {
		t.Fatalf("no name: exit %d, want 2\n%s", code, errOut)
	}
}

// TestJSONDurations: what --json prints holds no time.Duration, which
// would print as a number of nanoseconds: durations are strings like
// "30s" (api.Retention's keep_age).
func TestJSONDurations(t *testing.T) {
	duration := reflect.TypeFor[time.Duration]()
	seen := map[reflect.Type]bool{}
	var walk func(path string, ty reflect.Type)
	walk = func(path string, ty reflect.Type) {
		if ty == duration {
			t.Errorf("%s is a time.Duration", path)
		}
		if seen[ty] {
			return
		}
		seen[ty] = true
		switch ty.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
			walk(path, ty.Elem())
		case reflect.Struct:
			for f := range ty.Fields() {
				walk(path+"."+f.Name, f.Type)
			}
		}
	}
	for _, v := range []any{api.Installations{}, api.Installation{}, api.Operations{}, api.History{}, api.Builds{}, api.Build{},
		api.Refs{}, api.Keys{}, api.App{}, api.PruneReport{}, api.Retention{}, api.ErrorBody{}, versionInfo{}} {
		walk(reflect.TypeOf(v).String(), reflect.TypeOf(v))
	}
	if len(seen) < 20 {
		t.Fatalf("walked only %d types", len(seen))
	}
}
