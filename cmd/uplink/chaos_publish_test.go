package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/testenv"
	"github.com/uplinkhq/uplink/storage/s3"
	"github.com/uplinkhq/uplink/storage/s3/s3test"
)

// chaosPublishEnv is one data directory, Redis and S3 bucket that uplink
// processes are started on one after another, some built to die.
type chaosPublishEnv struct {
	t       *testing.T
	dataDir string
	env     []string
	gw      *testenv.S3
	bucket  string
	store   *s3.Driver
	key     apktest.Key
}

func newChaosPublishEnv(t *testing.T) *chaosPublishEnv {
	rdb := testenv.StartRedis(t)
	gw := testenv.StartS3(t)
	bucket := gw.NewBucket(t)
	store := s3test.New(t, gw, bucket)
	return &chaosPublishEnv{t: t, dataDir: t.TempDir(), gw: gw, bucket: bucket, store: store, key: apktest.NewKey(t), env: append(s3Env(gw, gw.Endpoint, bucket, rdb.Addr),
		// An operation of a killed process is taken over within a second.
		"UPLINK_OPERATION_LEASE=1s", "UPLINK_OPERATION_SCAN=200ms",
		// Small bounds, so that a restarted process cleans up within the test.
		"UPLINK_PUBLISH_GRACE=1s", "UPLINK_SWEEP_INTERVAL=200ms", "UPLINK_SPOOL_MAX_AGE=1s", "UPLINK_S3_MULTIPART_MAX_AGE=1s",
	)}
}

// start runs `uplink serve` on the environment's data directory, with
// extra variables (the chaos hooks), and waits until it is ready.
func (e *chaosPublishEnv) start(extra ...string) *replica {
	e.t.Helper()
	dp, ap := twoPorts(e.t)
	env := cliEnv(append(slices.Clone(e.env), append(extra, "UPLINK_DATA_DIR="+e.dataDir,
		"UPLINK_LISTEN=127.0.0.1:"+strconv.Itoa(dp), "UPLINK_ADMIN_LISTEN=127.0.0.1:"+strconv.Itoa(ap))...)...)
	r := &replica{proc: startServe(e.t, e.dataDir, env), api: client.New("127.0.0.1:"+strconv.Itoa(ap), replicaToken),
		dist: "http://127.0.0.1:" + strconv.Itoa(dp)}
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := r.api.Get(ctx, "/healthz", &map[string]string{})
		cancel()
		if err == nil {
			return r
		}
		if r.proc.exited() || time.Now().After(deadline) {
			e.t.Fatalf("uplink did not start:\n%s", r.proc.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killed waits for r to die and checks that SIGKILL (the hook) killed it.
func (e *chaosPublishEnv) killed(r *replica, what string) {
	e.t.Helper()
	select {
	case <-r.proc.done:
	case <-time.After(30 * time.Second):
		e.t.Fatalf("%s: uplink did not die", what)
	}
	var ee *exec.ExitError
	if !errors.As(r.proc.err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		e.t.Fatalf("%s: uplink ended with %v, want killed by SIGKILL:\n%s", what, r.proc.err, r.proc.stderr.String())
	}
}

func (e *chaosPublishEnv) stop(r *replica) {
	r.proc.cmd.Process.Kill()
	<-r.proc.done
}

// upload stores a one-package repository under commit; hello's VERSION
// file says version.
func (e *chaosPublishEnv) upload(r *replica, commit, version string) {
	e.t.Helper()
	files := apktest.BuildRepository(e.t, e.key, apktest.DefaultArch, apktest.Package{Name: "hello", Version: version,
		Files: []apktest.File{{Path: "usr/share/hello/VERSION", Data: []byte(version)}}})
	dir := e.t.TempDir()
	apktest.WriteDir(e.t, dir, files)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, p := range []string{"x86_64/hello-" + version + ".apk", "x86_64/APKINDEX.tar.gz"} {
		arch, name, _ := strings.Cut(p, "/")
		if err := r.api.Upload(ctx, "acme/hello", commit, arch, name, filepath.Join(dir, p)); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *chaosPublishEnv) publish(r *replica, commit string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := r.api.Publish(ctx, "acme/hello", api.PublishRequest{Commit: commit, Branch: "main", Tags: []string{"stable"}})
	return err
}

// consistent reports what is wrong with what r shows against the wanted
// history of main (newest first), which stable must follow too, or "".
func (e *chaosPublishEnv) consistent(r *replica, history []string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	refs, err := r.api.Refs(ctx, "acme/hello")
	if err != nil {
		return err.Error()
	}
	if refs.Branches["main"].Commit != history[0] || refs.Tags["stable"].Commit != history[0] || len(refs.Branches) != 1 || len(refs.Tags) != 1 {
		return fmt.Sprintf("refs %+v, want main and stable at %s", refs, history[0][:7])
	}
	for _, branch := range []string{"main", ""} {
		builds, err := r.api.Builds(ctx, "acme/hello", branch, 0)
		if err != nil {
			return err.Error()
		}
		var got []string
		for _, b := range builds {
			got = append(got, b.Commit)
		}
		if !slices.Equal(got, history) {
			return fmt.Sprintf("builds (branch %q) %d: %v, want %d: %v", branch, len(got), shortSHAs(got), len(history), shortSHAs(history))
		}
	}
	infos, err := e.store.List(ctx, "meta/publishes/")
	if err != nil {
		return err.Error()
	}
	if len(infos) > 0 {
		return fmt.Sprintf("%d publish intents pending", len(infos))
	}
	return ""
}

func shortSHAs(commits []string) []string {
	out := make([]string, len(commits))
	for i, c := range commits {
		out[i] = c[:7]
	}
	return out
}

// waitConsistent polls r until it shows history, or fails the test.
func (e *chaosPublishEnv) waitConsistent(r *replica, what string, history []string) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		why := e.consistent(r, history)
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not consistent 20s after the restart: %s\n%s", what, why, r.proc.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// upgraded waits until the installation tracking main got its upgrade to
// commit: the publish's hook ran, whoever completed the publish.
func (e *chaosPublishEnv) upgraded(r *replica, what, commit string) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var v instance.View
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := r.api.Get(ctx, "/api/v1/installations/web", &v)
		cancel()
		op := v.LastOperation
		if err == nil && op != nil && op.Kind == operation.KindUpgrade && op.To != nil && op.To.Resolved == commit && op.State == operation.Succeeded {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: the installation tracking main has no upgrade to %s 20s after the restart: %v, last operation %+v", what, commit[:7], err, op)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// installs checks that go-apk installs hello at version through main.
func (e *chaosPublishEnv) installs(r *replica, what, version string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root, err := apktest.Install(e.t, ctx, r.dist+"/distribution/main/acme/hello", e.key, "hello")
	if err != nil {
		e.t.Fatalf("%s: go-apk install through main: %v", what, err)
	}
	got, err := os.ReadFile(filepath.Join(root, "usr/share/hello/VERSION"))
	if err != nil || string(got) != version {
		e.t.Fatalf("%s: go-apk installed VERSION %q (%v), want %q", what, got, err, version)
	}
}

// TestChaosPublish: uplink killed with SIGKILL at each storage write of a
// publish (moving main and the tag stable) comes back, on its own, with
// main, stable, main's history and the build list consistent, and the
// installation tracking main upgraded: the publish happened completely
// or, killed before its first write, not at all. Its retry then changes
// nothing (or publishes), and go-apk installs the commit through main.
func TestChaosPublish(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	e := newChaosPublishEnv(t)
	r := e.start()
	const maxWrites = 12
	commits := make([]string, maxWrites+1)
	for i := range commits {
		commits[i] = sha(fmt.Sprint("chaos publish ", i))
		e.upload(r, commits[i], fmt.Sprintf("1.%d-r0", i))
	}
	if err := e.publish(r, commits[0]); err != nil {
		t.Fatal(err)
	}
	history := []string{commits[0]}
	spec := instance.Spec{App: "acme/hello", Package: "hello", Channel: instance.Channel{Branch: "main"},
		Instances: instance.Instances{Image: "alpine/3.20"}, PublicKey: string(e.key.PublicPEM()), KeyName: e.key.Name}
	var v instance.View
	if err := r.api.JSON(context.Background(), http.MethodPut, "/api/v1/installations/web", spec, &v); err != nil {
		t.Fatal(err)
	}
	waitDone(t, r, v.LastOperation.ID, time.Minute)
	e.stop(r)

	kills := 0
	for n := 1; ; n++ {
		if n > maxWrites {
			t.Fatalf("a publish still dies at write %d", n)
		}
		what := fmt.Sprintf("killed at write %d", n)
		commit, version := commits[n], fmt.Sprintf("1.%d-r0", n)
		h := e.start("UPLINK_CHAOS_KILL_AT_WRITE=" + strconv.Itoa(n))
		err := e.publish(h, commit)
		if err == nil {
			// Past the last write: nothing to kill any more.
			e.stop(h)
			history = slices.Insert(history, 0, commit)
			if kills < 7 { // intent, build, journal, app marker, branch, tag, intent removal
				t.Fatalf("a publish died at only %d writes", kills)
			}
			r := e.start()
			e.waitConsistent(r, "after the last publish", history)
			e.installs(r, "after the last publish", version)
			break
		}
		e.killed(h, what)
		kills++

		r := e.start()
		if n > 1 {
			// The intent was written: the restarted process completes it.
			history = slices.Insert(history, 0, commit)
			e.waitConsistent(r, what, history)
			e.upgraded(r, what, commit)
			e.installs(r, what, version)
		} else {
			// Killed before its first write: as if never sent.
			e.waitConsistent(r, what, history)
			history = slices.Insert(history, 0, commit)
		}
		// CI retries the publish that failed: it is done once.
		if err := e.publish(r, commit); err != nil {
			t.Fatalf("%s: retry: %v", what, err)
		}
		if why := e.consistent(r, history); why != "" {
			t.Fatalf("%s: after the retry: %s", what, why)
		}
		e.upgraded(r, what+", retried", commit)
		e.installs(r, what+", retried", version)
		e.stop(r)
	}
}

// TestChaosPublishUploadLeftovers: uplink killed with SIGKILL in the middle
// of storing a 40 MiB upload leaves its spool file in the data directory
// and an unfinished S3 multipart upload; the restarted process removes
// both within its bounds, while an upload that is merely slow (its spool
// file untouched for longer than --spool-max-age) still succeeds.
func TestChaosPublishUploadLeftovers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	e := newChaosPublishEnv(t)
	big := filepath.Join(t.TempDir(), "big-1.0-r0.apk")
	data := make([]byte, 40<<20)
	rand.Read(data)
	if err := os.WriteFile(big, data, 0o644); err != nil {
		t.Fatal(err)
	}
	commit := sha("chaos upload")

	// The hook kills once the S3 put has read 20 MiB: after the first
	// 16 MiB part went, within the second.
	// Its own sweeps must leave its live multipart upload alone: S3 dates
	// have one-second resolution, so a 1s bound could catch it.
	h := e.start("UPLINK_CHAOS_KILL_AFTER_BYTES="+strconv.Itoa(20<<20), "UPLINK_S3_MULTIPART_MAX_AGE=1h")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.api.Upload(ctx, "acme/hello", commit, "x86_64", "big-1.0-r0.apk", big); err == nil {
		t.Fatal("the upload succeeded through a process that should have died")
	}
	e.killed(h, "killed mid-upload")

	spools := func() []string {
		m, _ := filepath.Glob(filepath.Join(e.dataDir, "upload-*"))
		return m
	}
	mc, err := minio.New(e.gw.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(e.gw.AccessKey, e.gw.SecretKey, ""), Region: e.gw.Region})
	if err != nil {
		t.Fatal(err)
	}
	incomplete := func() []string {
		var keys []string
		for u := range mc.ListIncompleteUploads(ctx, e.bucket, "", true) {
			if u.Err != nil {
				t.Fatal(u.Err)
			}
			keys = append(keys, u.Key)
		}
		return keys
	}
	left := spools()
	if len(left) != 1 {
		t.Fatalf("spool files after the kill: %v, want 1", left)
	}
	if st, err := os.Stat(left[0]); err != nil || st.Size() != int64(len(data)) {
		t.Fatalf("spool file %s: %v, %v; want %d bytes", left[0], st, err, len(data))
	}
	if keys := incomplete(); len(keys) != 1 || !strings.HasPrefix(keys[0], "deployments/acme/hello/"+commit+"/") {
		t.Fatalf("incomplete multipart uploads after the kill: %v, want the big package's", keys)
	}

	r := e.start()
	// A slow upload meanwhile: its spool file stays untouched for longer
	// than --spool-max-age, held by a live process.
	pr, pw := io.Pipe()
	slow := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut,
			r.api.Base+"/api/v1/apps/acme/hello/builds/"+commit+"/x86_64/slow-1.0-r0.apk", pr)
		req.Header.Set("Authorization", "Bearer "+replicaToken)
		req.ContentLength = 2 << 20
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				err = fmt.Errorf("slow upload: %s", resp.Status)
			}
		}
		slow <- err
	}()
	half := bytes.Repeat([]byte("s"), 1<<20)
	if _, err := pw.Write(half); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(15 * time.Second)
	for {
		leftover := slices.Contains(spools(), left[0])
		keys := incomplete()
		if !leftover && len(keys) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("15s after the restart: spool file left %v, incomplete uploads %v\n%s", leftover, keys, r.proc.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The slow upload's spool file has been idle longer than the bound,
	// through several sweeps.
	time.Sleep(1500 * time.Millisecond)
	if len(spools()) != 1 {
		t.Fatalf("spool files of the slow upload: %v, want its one", spools())
	}
	if _, err := pw.Write(half); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Stat(ctx, "deployments/acme/hello/"+commit+"/x86_64/slow-1.0-r0.apk"); err != nil {
		t.Fatalf("the slow upload was not stored: %v", err)
	}
	if left := spools(); len(left) != 0 {
		t.Fatalf("spool files after the slow upload: %v", left)
	}
}
