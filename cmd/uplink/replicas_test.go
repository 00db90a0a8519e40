package main

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/testenv"
)

const replicaToken = "replica-token-0123456789"

// replica is one `uplink serve` process of a cluster.
type replica struct {
	proc *serveProc
	api  *client.Client
	dist string
}

// cluster starts count uplink processes sharing one Redis and one S3
// bucket, with leases short enough to see a takeover in a test and slow
// (recorded, skipped) instance steps.
func cluster(t *testing.T, count int) ([]*replica, *testenv.Redis, func() *replica) {
	rdb := testenv.StartRedis(t)
	gw := testenv.StartS3(t)
	bucket := gw.NewBucket(t)
	startOne := func() *replica {
		listen, dist, admin := listenEnv(t)
		env := cliEnv(append(append(listen, s3Env(gw, gw.Endpoint, bucket, rdb.Addr)...),
			"UPLINK_OPERATION_LEASE=3s", "UPLINK_OPERATION_SCAN=300ms", "UPLINK_NO_BACKEND_STEP_DELAY=700ms")...)
		r := &replica{proc: startServe(t, t.TempDir(), env), api: client.New(admin, replicaToken), dist: dist}
		waitReady(t, r.proc, r.api)
		return r
	}
	var rs []*replica
	for range count {
		rs = append(rs, startOne())
	}
	return rs, rdb, startOne
}

func sha(label string) string { return fmt.Sprintf("%x", sha1.Sum([]byte(label))) }

// publish publishes a one-package repository as commit on main through r
// and returns its files by path under the arch.
func (r *replica) publish(t *testing.T, key apktest.Key, commit, version string) map[string][]byte {
	t.Helper()
	files := apktest.BuildRepository(t, key, apktest.DefaultArch, apktest.Package{Name: "hello", Version: version,
		Files: []apktest.File{{Path: "usr/share/hello/VERSION", Data: []byte(version)}}})
	dir := t.TempDir()
	apktest.WriteDir(t, dir, files)
	ctx := context.Background()
	for _, p := range []string{"x86_64/hello-" + version + ".apk", "x86_64/APKINDEX.tar.gz"} {
		arch, name, _ := strings.Cut(p, "/")
		if err := r.api.Upload(ctx, "acme/hello", commit, arch, name, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.api.Publish(ctx, "acme/hello", api.PublishRequest{Commit: commit, Branch: "main"}); err != nil {
		t.Fatal(err)
	}
	return files
}

func (r *replica) op(t *testing.T, id string) *operation.Operation {
	t.Helper()
	var op operation.Operation
	if err := r.api.Get(context.Background(), "/api/v1/operations/"+id, &op); err != nil {
		t.Fatalf("operation %s: %v", id, err)
	}
	return &op
}

func (r *replica) channel(ch map[string]string) (*operation.Operation, error) {
	var op operation.Operation
	err := r.api.JSON(context.Background(), http.MethodPut, "/api/v1/installations/web/channel", ch, &op)
	return &op, err
}

func (r *replica) installation(t *testing.T) instance.View {
	t.Helper()
	var v instance.View
	if err := r.api.Get(context.Background(), "/api/v1/installations/web", &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func waitDone(t *testing.T, r *replica, id string, within time.Duration) *operation.Operation {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		op := r.op(t, id)
		if op.State.Done() {
			return op
		}
		if time.Now().After(deadline) {
			t.Fatalf("operation %s still %s after %v: %+v", id, op.State, within, op)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReplicas: two uplink processes sharing Redis and storage agree at
// once, let exactly one of two racing channel changes run, and finish
// the operation of a replica killed with SIGKILL; flushing Redis loses
// nothing.
func TestReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	rs, rdb, startOne := cluster(t, 2)
	r1, r2 := rs[0], rs[1]
	key := apktest.NewKey(t)
	a, b := sha("A"), sha("B")
	r1.publish(t, key, a, "1.0-r0")
	r1.publish(t, key, b, "2.0-r0")

	spec := instance.Spec{App: "acme/hello", Package: "hello", Channel: instance.Channel{Branch: "main"},
		Instances: instance.Instances{Image: "alpine/3.20"}, PublicKey: string(key.PublicPEM()), KeyName: key.Name}
	var v instance.View
	if err := r1.api.JSON(context.Background(), http.MethodPut, "/api/v1/installations/web", spec, &v); err != nil {
		t.Fatal(err)
	}
	waitDone(t, r2, v.LastOperation.ID, time.Minute)

	// A change through one replica is visible through the other at once.
	op, err := r1.channel(map[string]string{"commit": a})
	if err != nil {
		t.Fatal(err)
	}
	if got := r2.installation(t); got.Pending == nil || got.Pending.Channel.Commit != a || got.Pending.Operation != op.ID || got.LastOperation.ID != op.ID {
		t.Fatalf("r2 sees pending %+v, last op %s; want the pin to A by %s", got.Pending, got.LastOperation.ID, op.ID)
	}
	waitDone(t, r2, op.ID, time.Minute)

	// Two channel changes at once, one through each replica: one runs, the
	// other is told which.
	var wg sync.WaitGroup
	results := make([]error, 2)
	ops := make([]*operation.Operation, 2)
	for i, r := range []*replica{r1, r2} {
		wg.Go(func() { ops[i], results[i] = r.channel(map[string]string{"branch": "main"}) })
	}
	wg.Wait()
	var won *operation.Operation
	conflicts := 0
	for i, err := range results {
		var ce *client.Error
		switch {
		case err == nil:
			won = ops[i]
		case asError(err, &ce) && ce.Status == http.StatusConflict:
			conflicts++
		default:
			t.Fatalf("racing channel change: %v", err)
		}
	}
	if won == nil || conflicts != 1 {
		t.Fatalf("racing channel changes: %v; want exactly one accepted and one 409", results)
	}
	waitDone(t, r1, won.ID, time.Minute)

	// Flushing Redis loses nothing.
	rc := redis.NewClient(&redis.Options{Addr: rdb.Addr})
	defer rc.Close()
	if err := rc.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		v := r.installation(t)
		var h struct{ History []instance.HistoryEntry }
		r.api.Get(context.Background(), "/api/v1/installations/web/history", &h)
		var list struct{ Operations []*operation.Operation }
		r.api.Get(context.Background(), "/api/v1/operations?installation=web", &list)
		builds, _ := r.api.Builds(context.Background(), "acme/hello", "main", 0)
		if v.Channel.Branch != "main" || v.ResolvedCommit != b || len(h.History) != 3 || len(list.Operations) != 3 || len(builds) != 2 {
			t.Fatalf("after FLUSHALL: channel %+v commit %s, %d history entries, %d operations, %d builds",
				v.Channel, v.ResolvedCommit, len(h.History), len(list.Operations), len(builds))
		}
	}

	// Kill -9 the replica that runs a slow operation: another takes it over
	// once the lease lapses, and it ends.
	op, err = r1.channel(map[string]string{"commit": a})
	if err != nil {
		t.Fatal(err)
	}
	var holder *replica
	deadline := time.Now().Add(30 * time.Second)
	for holder == nil {
		cur := r1.op(t, op.ID)
		if cur.State == operation.Running && cur.Progress.Done >= 1 {
			for _, r := range rs {
				if r.started(op.ID) {
					holder = r
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("operation never ran: %+v", cur)
		}
		time.Sleep(50 * time.Millisecond)
	}
	survivor := r1
	if holder == r1 {
		survivor = r2
	}
	holder.proc.cmd.Process.Signal(syscall.SIGKILL)
	<-holder.proc.done
	killed := time.Now()
	// Bounded: the lease (3s), a scan (0.3s), then the remaining steps.
	final := waitDone(t, survivor, op.ID, time.Minute)
	takers := takenOverBy(final)
	if final.State != operation.Succeeded || len(takers) != 1 || strings.Contains(takers[0], holderName(holder)) {
		t.Fatalf("after the kill: %s, taken over by %q, error %q", final.State, takers, final.Error)
	}
	var takenOver bool
	for _, l := range final.Log {
		takenOver = takenOver || strings.Contains(l.Line, "taken over")
	}
	if !takenOver {
		t.Fatalf("the log does not say the operation was taken over: %+v", final.Log)
	}
	t.Logf("operation ended %v after the kill", time.Since(killed).Round(100*time.Millisecond))

	// A replica started afresh sees everything that was acknowledged.
	r3 := startOne()
	v = r3.installation(t)
	var h struct{ History []instance.HistoryEntry }
	r3.api.Get(context.Background(), "/api/v1/installations/web/history", &h)
	if v.Channel.Commit != a || len(h.History) != 4 || h.History[0].Result != operation.Succeeded {
		t.Fatalf("new replica: channel %+v, history %+v", v.Channel, h.History)
	}
}

// started reports whether r took operation id on: which replica holds an
// operation's lease is not part of the API, the replica's log says it.
func (r *replica) started(id string) bool {
	for _, l := range strings.Split(r.proc.stderr.String(), "\n") {
		if strings.Contains(l, `msg="operation started"`) && strings.Contains(l, " operation="+id+" ") {
			return true
		}
	}
	return false
}

// takenOverBy lists the replicas that took op over, from its log.
func takenOverBy(op *operation.Operation) []string {
	var out []string
	for _, l := range op.Log {
		if rest, ok := strings.CutPrefix(l.Line, "taken over by "); ok {
			taker, _, _ := strings.Cut(rest, ": ")
			out = append(out, taker)
		}
	}
	return out
}

// holderName is how a replica appears in lease holders.
func holderName(r *replica) string {
	return "/" + strconv.Itoa(r.proc.cmd.Process.Pid) + "/"
}

func asError(err error, target **client.Error) bool { return errors.As(err, target) }
