package incus

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

// TestWait runs the /wait table of the reference (§3) for both fixtures.
func TestWait(t *testing.T) {
	const id = "5ff1"
	running := reply{200, syncBody(opJSON(id, Running, "", ""))}
	gone := reply{404, errorBody(404, "Operation not found")}
	cases := []struct {
		name      string
		waits     []reply
		get       reply // GET /1.0/operations/<id>
		wantErr   string
		wantOpErr bool // an *OperationError
		wantNotFd bool
		wantWaits int
		wantGets  int
	}{
		{name: "success", waits: []reply{{200, syncBody(opJSON(id, Success, "", ""))}}, wantWaits: 1},
		{name: "failure", waits: []reply{{200, syncBody(opJSON(id, Failure, "Image not found", ""))}},
			wantErr: "Image not found", wantOpErr: true, wantWaits: 1},
		{name: "cancelled", waits: []reply{{200, syncBody(opJSON(id, Cancelled, "", ""))}},
			wantErr: "operation 5ff1 ended with status 401", wantOpErr: true, wantWaits: 1},
		{name: "timeout before done", waits: []reply{running, running, {200, syncBody(opJSON(id, Success, "", ""))}},
			wantWaits: 3},
		{name: "incus 6.0 deadline in 200", waits: []reply{{200, errorBody(500, "context deadline exceeded")},
			{200, syncBody(opJSON(id, Success, "", ""))}}, wantWaits: 2},
		{name: "incus 6.0 failure in 200, read back", waits: []reply{{200, errorBody(400, "Command not found")}},
			get:     reply{200, syncBody(opJSON(id, Failure, "Command not found", ""))},
			wantErr: "Command not found", wantOpErr: true, wantWaits: 1, wantGets: 1},
		{name: "incus 6.0 failure in 200, operation gone", waits: []reply{{200, errorBody(400, "Command not found")}},
			get: gone, wantErr: "Command not found", wantWaits: 1, wantGets: 1},
		{name: "incus 6.0 success read back", waits: []reply{{200, errorBody(500, "some transient error")}},
			get: reply{200, syncBody(opJSON(id, Success, "", ""))}, wantWaits: 1, wantGets: 1},
		{name: "other error, still running", waits: []reply{{500, errorBody(500, "database is locked")},
			{200, syncBody(opJSON(id, Success, "", ""))}}, get: running, wantWaits: 2, wantGets: 1},
		{name: "operation gone", waits: []reply{gone}, get: gone,
			wantErr: "Operation not found", wantNotFd: true, wantWaits: 1, wantGets: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forDialects(t, func(t *testing.T, f *fakeDaemon) {
				f.reply("POST /1.0/instances", 202, asyncBody(id))
				f.script("GET /1.0/operations/5ff1/wait", tc.waits...)
				if tc.get.status != 0 {
					f.reply("GET /1.0/operations/5ff1", tc.get.status, tc.get.body)
				}
				c := f.connect()
				op, err := c.CreateInstance(testCtx(t), InstancesPost{Name: "c1", Source: InstanceSource{Type: "none"}})
				if err != nil {
					t.Fatal(err)
				}
				err = op.WaitContext(context.Background()) // no deadline: the default poll
				if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				var opErr *OperationError
				if errors.As(err, &opErr) != tc.wantOpErr {
					t.Errorf("err %T: OperationError %v, want %v", err, !tc.wantOpErr, tc.wantOpErr)
				}
				if IsNotFound(err) != tc.wantNotFd {
					t.Errorf("IsNotFound(%v) = %v", err, !tc.wantNotFd)
				}
				var waits, gets int
				for _, r := range f.requests() {
					switch r.Path {
					case "/1.0/operations/5ff1/wait":
						waits++
						if r.RawQuery != "timeout=30" {
							t.Errorf("wait query %q", r.RawQuery)
						}
					case "/1.0/operations/5ff1":
						gets++
					}
				}
				if waits != tc.wantWaits || gets != tc.wantGets {
					t.Errorf("%d waits, %d gets; want %d, %d: %s", waits, gets, tc.wantWaits, tc.wantGets, f.summary())
				}
				// An ended operation keeps its result: the server forgets it.
				n := len(f.requests())
				if err2 := op.WaitContext(testCtx(t)); !errors.Is(err2, err) && err2 != err {
					t.Errorf("second wait: %v, want %v", err2, err)
				}
				if len(f.requests()) != n {
					t.Errorf("second wait sent requests")
				}
			})
		})
	}
}

func TestWaitContextCancel(t *testing.T) {
	f := newFake(t, DialectIncus)
	f.reply("DELETE /1.0/instances/c1", 202, asyncBody("op1"))
	f.handle("GET /1.0/operations/op1/wait", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never ends by itself
	})
	c := f.connect()
	op, err := c.DeleteInstance(testCtx(t), "c1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := op.WaitContext(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if q := f.request("GET", "/1.0/operations/op1/wait").RawQuery; q != "timeout=1" {
		t.Errorf("wait query %q, want the ctx deadline rounded up", q)
	}
}

func TestOperationGet(t *testing.T) {
	f := newFake(t, DialectLXD)
	f.reply("DELETE /1.0/instances/c1", 202, asyncBody("op1"))
	c := f.connect()
	op, err := c.DeleteInstance(testCtx(t), "c1")
	if err != nil {
		t.Fatal(err)
	}
	if got := op.Get(); got.ID != "op1" || got.StatusCode != Running {
		t.Fatalf("op = %+v", got)
	}
	info, _, err := c.GetOperationWait(testCtx(t), "missing", 5)
	if !IsNotFound(err) || info != nil {
		t.Fatalf("GetOperationWait(missing) = %v, %v", info, err)
	}
}
