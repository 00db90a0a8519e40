package main

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
)

// TestCLIRollback is the README's rollback story with the real binary
// against a running server: publish, pin with `uplink channel`, read
// `uplink history`, and a failing change that exits non-zero with the log.
func TestCLIRollback(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	dir := t.TempDir()
	dp, ap := twoPorts(t)
	const token = "cli-token-0123456789abcdef"
	startServe(t, dir, cliEnv("UPLINK_LISTEN=127.0.0.1:"+strconv.Itoa(dp), "UPLINK_ADMIN_LISTEN=127.0.0.1:"+strconv.Itoa(ap),
		"UPLINK_ADMIN_TOKEN="+token, "UPLINK_OPERATION_SCAN=200ms"))
	api := client.New("127.0.0.1:"+strconv.Itoa(ap), token)
	deadline := time.Now().Add(time.Minute)
	for api.Get(context.Background(), "/readyz", &map[string]string{}) != nil {
		if time.Now().After(deadline) {
			t.Fatal("server did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	env := cliEnv("UPLINK_ADDR=127.0.0.1:"+strconv.Itoa(ap), "UPLINK_ADMIN_TOKEN="+token)
	key := apktest.NewKey(t)
	publish := func(label, pkg, version string) string {
		repo := filepath.Join(t.TempDir(), "repo")
		apktest.WriteDir(t, repo, apktest.BuildRepository(t, key, apktest.DefaultArch, apktest.Package{Name: pkg, Version: version}))
		commit := sha(label)
		if _, stderr, code := runCLI(t, dir, env, "publish", repo, "--app", "acme/hello", "--commit", commit, "--branch", "main"); code != 0 {
			t.Fatalf("publish %s: %s", label, stderr)
		}
		return commit
	}
	a := publish("A", "hello", "1.0-r0")
	publish("B", "hello", "2.0-r0")

	spec := instance.Spec{App: "acme/hello", Package: "hello", Channel: instance.Channel{Branch: "main"},
		Instances: instance.Instances{Image: "alpine/3.20"}, PublicKey: string(key.PublicPEM()), KeyName: key.Name}
	var v instance.View
	if err := api.JSON(context.Background(), http.MethodPut, "/api/v1/installations/web", spec, &v); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := runCLI(t, dir, env, "ops", "watch", v.LastOperation.ID); code != 0 || !strings.Contains(out, "succeeded") {
		t.Fatalf("ops watch: exit %d\n%s%s", code, out, stderr)
	}

	out, stderr, code := runCLI(t, dir, env, "channel", "web", "--commit", a[:8])
	if code != 0 || !strings.Contains(out, "step verify-package: done") || !strings.Contains(out, "succeeded") {
		t.Fatalf("channel --commit: exit %d\n%s%s", code, out, stderr)
	}
	// The log is printed when the operation succeeded too: what each step did.
	if log, _, ok := strings.Cut(out, "\noperation web.2 succeeded"); !ok || !strings.Contains(log, "\nlog of operation web.2:\n") ||
		!strings.Contains(log, "verify-package") || !strings.Contains(log, a) {
		t.Fatalf("channel --commit: no log before the outcome:\n%s", out)
	}
	out, _, code = runCLI(t, dir, env, "installations", "--json")
	var list struct{ Installations []instance.View }
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Installations) != 1 || list.Installations[0].ResolvedCommit != a {
		t.Fatalf("installations --json: exit %d %s", code, out)
	}
	out, _, code = runCLI(t, dir, env, "history", "web")
	if code != 0 || !strings.Contains(out, a[:12]) || !strings.Contains(out, "succeeded") {
		t.Fatalf("history: exit %d\n%s", code, out)
	}

	// A commit whose repository lacks the package: the change fails.
	x := publish("X", "other", "1.0-r0")
	out, stderr, code = runCLI(t, dir, env, "channel", "web", "--commit", x)
	if code == 0 || !strings.Contains(stderr, `"hello" is not in`) || !strings.Contains(out, "failed") {
		t.Fatalf("failing channel change: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	// The installation still runs A, and shows the failed change to X.
	out, _, code = runCLI(t, dir, env, "installations", "web")
	if code != 0 || !strings.Contains(out, "commit:          "+a+"\n") ||
		!strings.Contains(out, "last attempt:    commit "+x[:12]+" by web.3, failed\n") || !strings.Contains(out, `"hello" is not in`) {
		t.Fatalf("installations web after a failed change: exit %d\n%s", code, out)
	}
	var ops struct{ Operations []*operation.Operation }
	api.Get(context.Background(), "/api/v1/operations?installation=web", &ops)
	if _, _, code := runCLI(t, dir, env, "ops", "watch", ops.Operations[0].ID); code == 0 {
		t.Fatal("ops watch of a failed operation exited 0")
	}
}
