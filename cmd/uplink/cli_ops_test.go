package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/server"
)

// The tests of this file run the installation and operation commands
// in-process against fakeAPI, an httptest server that imitates the admin
// API's installations and operations (API.md), its event streams
// included, and can misbehave on demand: multi-line data, CRLF, comments,
// unknown events, streams cut in the middle of an event.

const (
	testToken = "s3cret"
	commitA   = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	commitB   = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

var (
	testSteps = []string{"resolve", "stop-instances", "install-package", "health-check"}
	testTime  = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
)

// opStates is the succession of states of an operation that runs steps
// one by one: queued, each step running then done, succeeded; or, with
// failAt >= 0, failed at that step. They are made as the service records
// them and sent as the API shows them.
func opStates(id, inst string, steps []string, failAt int) []api.Operation {
	var out []api.Operation
	for _, op := range recordedStates(id, inst, steps, failAt) {
		var w api.Operation
		b, _ := json.Marshal(op)
		json.Unmarshal(b, &w)
		out = append(out, w)
	}
	return out
}

func recordedStates(id, inst string, steps []string, failAt int) []operation.Operation {
	at := func(i int) *time.Time { t := testTime.Add(time.Duration(i) * time.Second); return &t }
	mk := func(state operation.State, running int, stepState operation.StepState) operation.Operation {
		op := operation.Operation{
			ID: id, Kind: operation.KindChangeChannel, Installation: inst, State: state,
			From:      &operation.Endpoint{Branch: "main", Resolved: commitA},
			To:        &operation.Endpoint{Commit: commitB, Resolved: commitB},
			Commit:    commitB,
			CreatedAt: testTime,
		}
		for i, name := range steps {
			s := operation.Step{Name: name, State: operation.StepPending}
			switch {
			case i < running:
				s.State, s.StartedAt, s.FinishedAt = operation.StepDone, at(i), at(i+1)
			case i == running:
				s.State, s.StartedAt = stepState, at(i)
				if stepState != operation.StepRunning {
					s.FinishedAt = at(i + 1)
				}
			}
			op.Steps = append(op.Steps, s)
			if i <= running && i < len(steps) {
				op.AddLog(*at(i), "starting "+name)
			}
		}
		if state != operation.Queued {
			op.StartedAt = at(0)
		}
		if state.Done() {
			op.FinishedAt = at(len(steps))
		}
		op.Recount()
		return op
	}
	states := []operation.Operation{mk(operation.Queued, -1, "")}
	for i := range steps {
		states = append(states, mk(operation.Running, i, operation.StepRunning))
		if i == failAt {
			f := mk(operation.Failed, i, operation.StepFailed)
			f.Error = "step " + steps[i] + ": exit status 1"
			f.AddLog(testTime.Add(time.Minute), "ERROR: unable to select packages:", "  web (no such package)")
			return append(states, f)
		}
	}
	return append(states, mk(operation.Succeeded, len(steps), ""))
}

// fakeOp is an operation of fakeAPI and how its event stream behaves.
type fakeOp struct {
	states []api.Operation // what it goes through; the last is final
	pos    int             // the state it is in now
	// cuts[i] is how many events connection i of the stream sends
	// before it is cut (-1 or absent: never); partial makes the cut land
	// in the middle of an event.
	cuts    []int
	partial bool
	gap     int // how many states the operation moves on while a stream is cut
	// connections counts the event streams opened.
	connections int
	// broken makes every event's data unreadable.
	broken bool
}

// fakeAPI imitates the installation and operation endpoints of the admin API.
type fakeAPI struct {
	t   *testing.T
	srv *httptest.Server

	// How events are written.
	multiline, crlf, comments bool

	mu            sync.Mutex
	installations []api.Installation
	history       map[string][]api.HistoryEntry
	ops           map[string]*fakeOp
	order         []string // operation ids, oldest first
	next          []api.Operation
	nextID        string // of the operation a channel change starts
	busy          string // a running operation: channel changes answer 409
	busyMessage   string // the 409's message, when not the default
	channelBodies []map[string]any
	requests      []string
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{t: t, history: map[string][]api.HistoryEntry{}, ops: map[string]*fakeOp{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/installations", f.listInstallations)
	mux.HandleFunc("GET /api/v1/installations/{name}", f.getInstallation)
	mux.HandleFunc("PUT /api/v1/installations/{name}/channel", f.putChannel)
	mux.HandleFunc("GET /api/v1/installations/{name}/history", f.getHistory)
	mux.HandleFunc("GET /api/v1/operations", f.listOperations)
	mux.HandleFunc("GET /api/v1/operations/{id}", f.getOperation)
	mux.HandleFunc("GET /api/v1/operations/{id}/events", f.events)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
		f.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			apiError(w, http.StatusUnauthorized, "unauthorized", "no or wrong token")
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// addOp adds an operation that goes through states.
func (f *fakeAPI) addOp(states []api.Operation) *fakeOp {
	f.mu.Lock()
	defer f.mu.Unlock()
	o := &fakeOp{states: states}
	f.ops[states[0].ID] = o
	f.order = append(f.order, states[0].ID)
	return o
}

// args is the command line plus the flags that reach the fake.
func (f *fakeAPI) args(args ...string) []string {
	return append(args, "--addr", f.srv.URL, "--token", testToken)
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (f *fakeAPI) listInstallations(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	writeJSON(w, 200, map[string]any{"installations": f.installations})
}

func (f *fakeAPI) getInstallation(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.installations {
		if v.Name == r.PathValue("name") {
			writeJSON(w, 200, v)
			return
		}
	}
	apiError(w, 404, "not_found", "no installation "+r.PathValue("name"))
}

func (f *fakeAPI) putChannel(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body) != 1 {
		apiError(w, 400, "bad_request", "name exactly one of commit, tag, branch")
		return
	}
	f.channelBodies = append(f.channelBodies, body)
	if f.busy != "" {
		if f.busyMessage != "" {
			// An answer that does not name the operation: the CLI looks it up.
			apiError(w, 409, "operation_running", f.busyMessage)
			return
		}
		writeJSON(w, 409, api.ErrorBody{Error: api.Error{Code: "operation_running", Operation: f.busy,
			Message: "operation " + f.busy + " is running for this installation; wait for it to end"}})
		return
	}
	for _, v := range body {
		if v == "nope" {
			apiError(w, 404, "not_found", "no published build for nope")
			return
		}
	}
	o := f.ops[f.nextID]
	if o == nil {
		apiError(w, 404, "not_found", "no such installation")
		return
	}
	writeJSON(w, 202, o.states[o.pos])
}

func (f *fakeAPI) getHistory(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.history[r.PathValue("name")]
	if !ok {
		apiError(w, 404, "not_found", "no installation "+r.PathValue("name"))
		return
	}
	writeJSON(w, 200, map[string]any{"history": h})
}

func (f *fakeAPI) listOperations(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	list := []api.Operation{}
	for i := len(f.order) - 1; i >= 0; i-- {
		o := f.ops[f.order[i]]
		if op := o.states[o.pos]; op.Installation == r.URL.Query().Get("installation") {
			list = append(list, op)
		}
	}
	writeJSON(w, 200, map[string]any{"operations": list})
}

func (f *fakeAPI) getOperation(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o := f.ops[r.PathValue("id")]
	if o == nil {
		apiError(w, 404, "not_found", "no operation "+r.PathValue("id"))
		return
	}
	writeJSON(w, 200, o.states[o.pos])
}

// events streams an operation: its state now, then each next state,
// until a final one.
func (f *fakeAPI) events(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	o := f.ops[r.PathValue("id")]
	if o == nil {
		f.mu.Unlock()
		apiError(w, 404, "not_found", "no operation "+r.PathValue("id"))
		return
	}
	conn := o.connections
	o.connections++
	cut := -1
	if conn < len(o.cuts) {
		cut = o.cuts[conn]
	}
	f.mu.Unlock()

	nl := "\n"
	if f.crlf {
		nl = "\r\n"
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(200)
	fl := w.(http.Flusher)
	fmt.Fprintf(w, ": hello%sretry: 50%s%s", nl, nl, nl)
	// An event of a kind this client does not know.
	fmt.Fprintf(w, "event: log%sdata: {\"line\":\"x\"}%s%s", nl, nl, nl)
	for sent := 0; ; sent++ {
		f.mu.Lock()
		op := o.states[o.pos]
		if sent == cut {
			if o.partial {
				fmt.Fprintf(w, "event: operation%sdata: {\"id\":\"%s\",\"state\":\"succ", nl, op.ID)
			}
			o.pos = min(o.pos+o.gap, len(o.states)-1)
			f.mu.Unlock()
			fl.Flush()
			return // the stream breaks
		}
		if o.pos < len(o.states)-1 {
			o.pos++
		}
		broken := o.broken
		f.mu.Unlock()

		var data []byte
		if f.multiline {
			data, _ = json.MarshalIndent(op, "", "  ")
		} else {
			data, _ = json.Marshal(op)
		}
		if broken {
			data = []byte("{not json")
		}
		fmt.Fprintf(w, "id: %d%sevent: operation%s", sent, nl, nl)
		for _, line := range strings.Split(string(data), "\n") {
			fmt.Fprintf(w, "data: %s%s", line, nl)
		}
		fmt.Fprint(w, nl)
		if f.comments {
			fmt.Fprintf(w, ":keep-alive%s%s", nl, nl)
		}
		fl.Flush()
		if op.State.Done() {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// runCmd runs a command in-process and returns its output and exit code.
func runCmd(cmd func([]string, io.Writer, io.Writer) int, args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = cmd(args, &out, &errb)
	return out.String(), errb.String(), code
}

// plainLines is what following a successful operation of testSteps prints
// when stdout is not a terminal: the steps, the log, the outcome.
func plainLines(id string) string {
	s := "operation " + id + ": change-channel web: branch main (aaaaaaaaaaaa) -> commit bbbbbbbbbbbb\n"
	for _, name := range testSteps {
		s += "step " + name + ": running\nstep " + name + ": done\n"
	}
	return s + logLines(id) + "operation " + id + " succeeded\n"
}

// logLines is how the log of a successful operation of testSteps is
// printed once it ended.
func logLines(id string) string {
	s := "log of operation " + id + ":\n"
	for i, name := range testSteps {
		s += "  " + localTime(testTime.Add(time.Duration(i)*time.Second)) + " starting " + name + "\n"
	}
	return s
}

// TestWatchStream: Watch reads events whatever their framing (one data
// line or many, LF or CRLF, with comments and unknown events between
// them) and reports every state in order, the final one last.
func TestWatchStream(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		multiline, crlf, comments bool
	}{
		{"plain", false, false, false},
		{"multiline", true, false, false},
		{"crlf+multiline+comments", true, true, true},
		{"comments", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.multiline, f.crlf, f.comments = tc.multiline, tc.crlf, tc.comments
			states := opStates("web.1", "web", testSteps, -1)
			o := f.addOp(states)
			var seen []api.Operation
			c := client.New(f.srv.URL, testToken)
			final, err := c.Watch(context.Background(), "web.1", func(op *api.Operation) { seen = append(seen, *op) })
			if err != nil {
				t.Fatal(err)
			}
			if final.State != api.Succeeded || final.Progress != (api.Progress{Done: 4, Total: 4}) {
				t.Fatalf("final state %s, progress %+v", final.State, final.Progress)
			}
			if !jsonEqual(seen, states) {
				t.Fatalf("saw %d states, want the %d sent:\n%s", len(seen), len(states), mustJSON(seen))
			}
			if o.connections != 1 {
				t.Fatalf("%d connections, want 1", o.connections)
			}
		})
	}
}

// TestWatchReconnect: a stream cut before the operation ends, even in the
// middle of an event, is followed by a fresh GET of the operation and a
// new stream; the cut-off event is dropped, not misread.
func TestWatchReconnect(t *testing.T) {
	f := newFakeAPI(t)
	f.multiline = true
	states := opStates("web.1", "web", slices.Concat(testSteps, []string{"cleanup", "report"}), -1)
	o := f.addOp(states)
	o.cuts, o.partial, o.gap = []int{2, 0, 1}, true, 1
	var seen []api.Operation
	c := client.New(f.srv.URL, testToken)
	final, err := c.Watch(context.Background(), "web.1", func(op *api.Operation) { seen = append(seen, *op) })
	if err != nil {
		t.Fatal(err)
	}
	if final.State != api.Succeeded {
		t.Fatalf("final state %s", final.State)
	}
	if o.connections != 4 {
		t.Fatalf("%d connections, want 4 (3 cut)", o.connections)
	}
	// Every state seen is one the operation went through, in order, and
	// none twice.
	j := 0
	for _, s := range seen {
		for j < len(states) && !jsonEqual(s, states[j]) {
			j++
		}
		if j == len(states) {
			t.Fatalf("states seen out of order or unknown:\n%s", mustJSON(seen))
		}
		j++
	}
	f.mu.Lock()
	gets := 0
	for _, r := range f.requests {
		if r == "GET /api/v1/operations/web.1" {
			gets++
		}
	}
	f.mu.Unlock()
	if gets != 3 {
		t.Fatalf("%d GETs of the operation, want one per cut stream (3)", gets)
	}
}

// TestWatchEndedWhileCut: when the operation ended while the stream was
// cut, the fresh GET says so and Watch returns without reconnecting.
func TestWatchEndedWhileCut(t *testing.T) {
	f := newFakeAPI(t)
	states := opStates("web.1", "web", testSteps, 2)
	o := f.addOp(states)
	o.cuts, o.gap = []int{1}, 100
	c := client.New(f.srv.URL, testToken)
	final, err := c.Watch(context.Background(), "web.1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if final.State != api.Failed || final.Error == "" {
		t.Fatalf("final %+v", final)
	}
	if o.connections != 1 {
		t.Fatalf("%d connections, want 1", o.connections)
	}
}

// TestWatchErrors: what reconnecting cannot cure ends Watch at once.
func TestWatchErrors(t *testing.T) {
	f := newFakeAPI(t)
	c := client.New(f.srv.URL, testToken)
	_, err := c.Watch(context.Background(), "web.9", nil)
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != "not_found" {
		t.Fatalf("unknown operation: %v, want a 404 *client.Error", err)
	}

	_, err = client.New(f.srv.URL, "wrong").Watch(context.Background(), "web.9", nil)
	if !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("wrong token: %v, want a 401 *client.Error", err)
	}

	o := f.addOp(opStates("web.1", "web", testSteps, -1))
	o.broken = true
	_, err = c.Watch(context.Background(), "web.1", nil)
	if err == nil || !strings.Contains(err.Error(), "unreadable") || o.connections != 1 {
		t.Fatalf("unreadable event: %v after %d connections, want an error after 1", err, o.connections)
	}
}

// TestWatchCancel: Watch returns when its context ends, even while the
// stream is silent.
func TestWatchCancel(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		op, _ := json.Marshal(opStates("web.1", "web", testSteps, -1)[1])
		fmt.Fprintf(w, "event: operation\ndata: %s\n\n", op)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	seen := make(chan struct{}, 1)
	done := make(chan error, 1)
	var last *api.Operation
	go func() {
		var err error
		last, err = client.New(srv.URL, testToken).Watch(ctx, "web.1", func(*api.Operation) { seen <- struct{}{} })
		done <- err
	}()
	<-seen
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || last == nil || last.State != api.Running {
			t.Fatalf("Watch after cancel: %v, last %+v", err, last)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after its context ended")
	}
}

// TestChannelFollow: `uplink channel` sends the one ref given, follows
// the operation and prints a line per step state change, then the outcome.
func TestChannelFollow(t *testing.T) {
	clearUplinkEnv(t)
	for _, tc := range []struct {
		flag, value string
	}{{"--commit", "bbbbbbb"}, {"--tag", "v1.2"}, {"--branch", "release/2"}} {
		t.Run(tc.flag, func(t *testing.T) {
			f := newFakeAPI(t)
			f.multiline, f.comments = true, true
			f.addOp(opStates("web.2", "web", testSteps, -1))
			f.nextID = "web.2"
			// Flags after and before the installation both work.
			stdout, stderr, code := runCmd(cmdChannel, f.args("web", tc.flag, tc.value)...)
			if code != 0 {
				t.Fatalf("exit %d, stderr:\n%s", code, stderr)
			}
			if stdout != plainLines("web.2") {
				t.Fatalf("stdout:\n%s\nwant:\n%s", stdout, plainLines("web.2"))
			}
			if stderr != "" {
				t.Fatalf("stderr: %q", stderr)
			}
			want := map[string]any{strings.TrimPrefix(tc.flag, "--"): tc.value}
			if len(f.channelBodies) != 1 || !reflect.DeepEqual(f.channelBodies[0], want) {
				t.Fatalf("channel bodies %v, want [%v]", f.channelBodies, want)
			}
		})
	}
}

// TestChannelFailure: a failed operation prints its error last on stdout
// and its log on stderr, and exits 1.
func TestChannelFailure(t *testing.T) {
	clearUplinkEnv(t)
	f := newFakeAPI(t)
	f.addOp(opStates("web.3", "web", testSteps, 2))
	f.nextID = "web.3"
	stdout, stderr, code := runCmd(cmdChannel, f.args("--tag", "v1", "web")...)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stdout:\n%s", code, stdout)
	}
	want := "operation web.3: change-channel web: branch main (aaaaaaaaaaaa) -> commit bbbbbbbbbbbb\n" +
		"step resolve: running\nstep resolve: done\nstep stop-instances: running\nstep stop-instances: done\n" +
		"step install-package: running\nstep install-package: failed\n" +
		"operation web.3 failed: step install-package: exit status 1\n"
	if stdout != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", stdout, want)
	}
	for _, s := range []string{"log of operation web.3:", "starting install-package", "ERROR: unable to select packages:", "  web (no such package)"} {
		if !strings.Contains(stderr, s) {
			t.Fatalf("stderr lacks %q:\n%s", s, stderr)
		}
	}
}

// TestChannelJSON: --json prints the final operation and nothing else on
// stdout; the progress goes to stderr.
func TestChannelJSON(t *testing.T) {
	clearUplinkEnv(t)
	f := newFakeAPI(t)
	states := opStates("web.2", "web", testSteps, -1)
	f.addOp(states)
	f.nextID = "web.2"
	stdout, stderr, code := runCmd(cmdChannel, f.args("web", "--commit", commitB, "--json")...)
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	var op api.Operation
	if err := json.Unmarshal([]byte(stdout), &op); err != nil {
		t.Fatalf("stdout is not one JSON operation: %v\n%s", err, stdout)
	}
	if !jsonEqual(op, states[len(states)-1]) {
		t.Fatalf("stdout:\n%s\nwant the final state", stdout)
	}
	if stderr != plainLines("web.2") {
		t.Fatalf("stderr:\n%s", stderr)
	}

	// A failure: the operation still on stdout, exit 1.
	f.addOp(opStates("web.3", "web", testSteps, 0))
	f.nextID = "web.3"
	stdout, stderr, code = runCmd(cmdChannel, f.args("web", "--commit", commitB, "--json")...)
	if err := json.Unmarshal([]byte(stdout), &op); code != 1 || err != nil || op.State != api.Failed {
		t.Fatalf("failure with --json: exit %d, stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "operation web.3 failed: step resolve: exit status 1") || !strings.Contains(stderr, "ERROR: unable") {
		t.Fatalf("stderr:\n%s", stderr)
	}
}

// TestChannelNoWait: --no-wait prints the operation's id (with --json,
// the operation) and returns at once.
func TestChannelNoWait(t *testing.T) {
	clearUplinkEnv(t)
	f := newFakeAPI(t)
	o := f.addOp(opStates("web.2", "web", testSteps, -1))
	f.nextID = "web.2"
	stdout, stderr, code := runCmd(cmdChannel, f.args("web", "--branch", "main", "--no-wait")...)
	if code != 0 || stdout != "web.2\n" || stderr != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	stdout, _, code = runCmd(cmdChannel, f.args("web", "--branch", "main", "--no-wait", "--json")...)
	var op api.Operation
	if err := json.Unmarshal([]byte(stdout), &op); code != 0 || err != nil || op.ID != "web.2" || op.State != api.Queued {
		t.Fatalf("exit %d, stdout %q", code, stdout)
	}
	if o.connections != 0 {
		t.Fatal("--no-wait followed the operation")
	}
}

// TestChannelBusy: a 409 names the running operation and exits 3 (busy),
// whether the answer names it or the CLI has to look it up.
func TestChannelBusy(t *testing.T) {
	clearUplinkEnv(t)
	f := newFakeAPI(t)
	f.addOp(opStates("web.1", "web", testSteps, -1)[:2])
	f.busy = "web.1"
	_, stderr, code := runCmd(cmdChannel, f.args("web", "--commit", "bbbbbbb")...)
	if code != 3 || !strings.Contains(stderr, "operation web.1 is running") || !strings.Contains(stderr, "uplink ops watch web.1") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	f.busyMessage = "another operation is running"
	_, stderr, code = runCmd(cmdChannel, f.args("web", "--commit", "bbbbbbb")...)
	if code != 3 || !strings.Contains(stderr, "operation web.1 is running") {
		t.Fatalf("without the id in the message: exit %d, stderr:\n%s", code, stderr)
	}

	// The client's error.
	_, err := client.New(f.srv.URL, testToken).SetChannel(context.Background(), "web", api.Channel{Tag: "v1"})
	var busy *client.Error
	f.busyMessage = ""
	_, err2 := client.New(f.srv.URL, testToken).SetChannel(context.Background(), "web", api.Channel{Tag: "v1"})
	if !errors.As(err, &busy) || !busy.Busy() || busy.Operation != "" || busy.Status != 409 {
		t.Fatalf("SetChannel busy without id: %#v", err)
	}
	if !errors.As(err2, &busy) || !busy.Busy() || busy.Operation != "web.1" {
		t.Fatalf("SetChannel busy: %#v", err2)
	}
}

// TestChannelErrors: usage errors exit 2 with the usage on stderr; API
// errors exit 1 with the API's message.
func TestChannelErrors(t *testing.T) {
	clearUplinkEnv(t)
	f := newFakeAPI(t)
	for _, args := range [][]string{
		f.args("web"),
		f.args("web", "--commit", "abc1234", "--branch", "main"),
		f.args("--commit", "abc1234"),
		f.args("web", "other", "--commit", "abc1234"),
		f.args("web", "--commit", "abc1234", "--bogus"),
		f.args("web", "--commit="),
	} {
		stdout, stderr, code := runCmd(cmdChannel, args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "usage: uplink channel") || !strings.HasPrefix(stderr, "uplink channel: ") {
			t.Fatalf("%q: exit %d, stdout %q, stderr:\n%s", args, code, stdout, stderr)
		}
	}
	if len(f.channelBodies) != 0 {
		t.Fatal("a usage error reached the server")
	}
	stdout, _, code := runCmd(cmdChannel, "-h")
	if code != 0 || !strings.Contains(stdout, "-branch") {
		t.Fatalf("-h: exit %d, stdout:\n%s", code, stdout)
	}

	// One ref in the environment, another on the command line: the
	// message names the variable.
	t.Setenv("UPLINK_BRANCH", "main")
	_, stderr, code := runCmd(cmdChannel, f.args("web", "--commit", "abc1234")...)
	if code != 2 || !strings.Contains(stderr, "UPLINK_BRANCH") {
		t.Fatalf("UPLINK_BRANCH with --commit: exit %d, stderr:\n%s", code, stderr)
	}
	os.Unsetenv("UPLINK_BRANCH")

	// An unknown ref: the server's 404.
	_, stderr, code = runCmd(cmdChannel, f.args("web", "--tag", "nope")...)
	if code != 1 || !strings.Contains(stderr, "no published build for nope") {
		t.Fatalf("unknown ref: exit %d, stderr:\n%s", code, stderr)
	}
	// A wrong token.
	_, stderr, code = runCmd(cmdChannel, "web", "--tag", "v1", "--addr", f.srv.URL, "--token", "wrong")
	if code != 1 || !strings.Contains(stderr, "401") {
		t.Fatalf("wrong token: exit %d, stderr:\n%s", code, stderr)
	}
}

// TestClientEnvAndTokenFile: UPLINK_ADDR and the token file of the data
// directory reach the new commands too.
func TestClientEnvAndTokenFile(t *testing.T) {
	clearUplinkEnv(t)
	f := newFakeAPI(t)
	f.history["web"] = nil
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, server.TokenFile), []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("UPLINK_ADDR", f.srv.URL)
	t.Setenv("UPLINK_DATA_DIR", dir)
	stdout, stderr, code := runCmd(cmdHistory, "web", "--json")
	if code != 0 || strings.TrimSpace(stdout) != "{\n  \"history\": []\n}" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestFollowProgressBar: on a terminal, the progress is a bar of done/total
// steps described by the current step.
func TestFollowProgressBar(t *testing.T) {
	clearUplinkEnv(t)
	defer func(f func(io.Writer) bool) { isTerminal = f }(isTerminal)
	isTerminal = func(io.Writer) bool { return true }
	f := newFakeAPI(t)
	f.addOp(opStates("web.2", "web", testSteps, -1))
	stdout, stderr, code := runCmd(cmdOps, f.args("watch", "web.2")...)
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	for _, s := range []string{"install-package", "health-check", "2/4", "4/4", "100%", "operation web.2 succeeded\n"} {
		if !strings.Contains(stdout, s) {
			t.Fatalf("stdout lacks %q:\n%q", s, stdout)
		}
	}
	if strings.Contains(stdout, "step resolve: running") {
		t.Fatalf("plain lines on a terminal:\n%q", stdout)
	}
	f.addOp(opStates("web.3", "web", testSteps, 1))
	stdout, stderr, code = runCmd(cmdOps, f.args("watch", "web.3")...)
	// A failed step counts as done (operation.Recount).
	if code != 1 || !strings.Contains(stdout, "2/4") || !strings.Contains(stdout, "operation web.3 failed: step stop-instances") ||
		!strings.Contains(stderr, "ERROR: unable") {
		t.Fatalf("failure: exit %d, stdout:\n%q\nstderr:\n%s", code, stdout, stderr)
	}
}

// TestOps: ops watch, show and list.
func TestOps(t *testing.T) {
	clearUplinkEnv(t)
	f := newFakeAPI(t)
	f.addOp(opStates("web.1", "web", testSteps, 3))
	f.addOp(opStates("web.2", "web", testSteps, -1))
	f.addOp(opStates("api.1", "api", testSteps, -1))

	stdout, stderr, code := runCmd(cmdOps, f.args("watch", "web.2")...)
	if code != 0 || stdout != plainLines("web.2") {
		t.Fatalf("watch: exit %d, stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	// Watching an operation that already ended: its steps, its outcome.
	stdout, _, code = runCmd(cmdOps, f.args("watch", "web.2")...)
	if code != 0 || !strings.HasSuffix(stdout, "step health-check: done\n"+logLines("web.2")+"operation web.2 succeeded\n") {
		t.Fatalf("watch an ended operation: exit %d, stdout:\n%s", code, stdout)
	}
	stdout, stderr, code = runCmd(cmdOps, f.args("watch", "web.1")...)
	if code != 1 || !strings.Contains(stdout, "operation web.1 failed: step health-check: exit status 1") || !strings.Contains(stderr, "no such package") {
		t.Fatalf("watch a failing one: exit %d, stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	stdout, stderr, code = runCmd(cmdOps, f.args("watch", "web.9")...)
	if code != 1 || !strings.Contains(stderr, "no operation web.9") {
		t.Fatalf("watch an unknown one: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	stdout, _, code = runCmd(cmdOps, f.args("list", "web")...)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") ||
		!strings.HasPrefix(lines[1], "web.2 ") || !strings.HasPrefix(lines[2], "web.1 ") ||
		!strings.Contains(lines[1], "succeeded") || !strings.Contains(lines[1], "4/4") ||
		!strings.Contains(lines[2], "step health-check: exit status 1") || !strings.Contains(lines[1], "branch main") {
		t.Fatalf("list: exit %d, stdout:\n%s", code, stdout)
	}
	stdout, _, code = runCmd(cmdOps, f.args("list", "web", "--json")...)
	var list struct{ Operations []api.Operation }
	if err := json.Unmarshal([]byte(stdout), &list); code != 0 || err != nil || len(list.Operations) != 2 {
		t.Fatalf("list --json: exit %d, stdout:\n%s", code, stdout)
	}

	stdout, _, code = runCmd(cmdOps, f.args("show", "web.1")...)
	for _, s := range []string{"id:", "web.1", "state:", "failed", "error:", "health-check", "steps:", "log:", "no such package", "from:", "branch main (aaaaaaaaaaaa)", "commit bbbbbbbbbbbb"} {
		if code != 0 || !strings.Contains(stdout, s) {
			t.Fatalf("show: exit %d, stdout lacks %q:\n%s", code, s, stdout)
		}
	}
	stdout, _, code = runCmd(cmdOps, f.args("show", "web.1", "--json")...)
	var op api.Operation
	if err := json.Unmarshal([]byte(stdout), &op); code != 0 || err != nil || op.ID != "web.1" {
		t.Fatalf("show --json: exit %d, stdout:\n%s", code, stdout)
	}

	for _, args := range [][]string{f.args(), f.args("frob", "x"), f.args("watch"), f.args("list"), f.args("show", "a", "b")} {
		stdout, stderr, code := runCmd(cmdOps, args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "usage: uplink ops") {
			t.Fatalf("%q: exit %d, stdout %q, stderr:\n%s", args, code, stdout, stderr)
		}
	}
}

func testView() api.Installation {
	ops := opStates("web.2", "web", testSteps, -1)
	return api.Installation{
		Name: "web",
		Spec: api.Spec{
			App: "acme/web", Package: "web", Channel: api.Channel{Commit: commitB, Tag: "v1.2"},
			Instances:     api.Instances{Count: 2, Image: "alpine/3.20", Profiles: []string{"default"}, Project: "default"},
			KeyName:       "acme-web.rsa.pub",
			HealthCommand: []string{"/bin/sh", "-c", "wget -q -O- localhost/healthz"},
		},
		ResolvedCommit: commitB,
		RepositoryURL:  "http://uplink:4080/distribution/" + commitB + "/acme/web",
		Observed:       []api.Instance{{Name: "web-1", Commit: commitB, State: "running"}, {Name: "web-2", Commit: commitA, State: "stopped"}},
		LastOperation:  &ops[len(ops)-1],
		CreatedAt:      testTime,
		UpdatedAt:      testTime.Add(time.Hour),
	}
}

// TestInstallations: the table, one in detail, and --json.
func TestInstallations(t *testing.T) {
	clearUplinkEnv(t)
	f := newFakeAPI(t)
	f.installations = []api.Installation{
		testView(),
		{Name: "api", Spec: api.Spec{App: "acme/api", Package: "api", Channel: api.Channel{Branch: "main"}},
			ResolvedCommit: commitA, RepositoryURL: "http://uplink:4080/distribution/main/acme/api",
			LastAttempt: &api.Attempt{Channel: api.Channel{Branch: "bad"}, Commit: commitB, Operation: "api.3",
				Error: "verify-package: package \"api\" is not in the x86_64 repository of commit " + commitB + "\nmore"}},
		{Name: "new", Spec: api.Spec{App: "acme/new", Package: "new"},
			Pending: &api.Attempt{Channel: api.Channel{Commit: commitA}, Commit: commitA, Operation: "new.1"}},
	}
	stdout, stderr, code := runCmd(cmdInstallations, f.args()...)
	want := "NAME  APP       PACKAGE  CHANNEL      COMMIT        REPOSITORY URL                                                                     LAST OP          LAST ATTEMPT\n" +
		"web   acme/web  web      tag v1.2     bbbbbbbbbbbb  http://uplink:4080/distribution/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb/acme/web  web.2 succeeded  -\n" +
		"api   acme/api  api      branch main  aaaaaaaaaaaa  http://uplink:4080/distribution/main/acme/api                                      -                branch bad (bbbbbbbbbbbb) by api.3\n" +
		"new   acme/new  new      -            -             -                                                                                  -                -\n"
	if code != 0 || stdout != want {
		t.Fatalf("exit %d, stdout:\n%s\nwant:\n%s\nstderr:\n%s", code, stdout, want, stderr)
	}

	// In detail: the failed attempt under the channel the instances run,
	// and the change that runs now.
	stdout, _, code = runCmd(cmdInstallations, f.args("api")...)
	for _, s := range []string{"channel:         branch main\n", "last attempt:    branch bad (bbbbbbbbbbbb) by api.3, failed\n",
		"attempt error:   verify-package: package \"api\" is not in the x86_64 repository of commit " + commitB + "\n"} {
		if code != 0 || !strings.Contains(stdout, s) {
			t.Fatalf("detail of a failed attempt: exit %d, stdout lacks %q:\n%s", code, s, stdout)
		}
	}
	stdout, _, code = runCmd(cmdInstallations, f.args("new")...)
	for _, s := range []string{"channel:         -\n", "repository url:  -\n", "changing to:     commit aaaaaaaaaaaa by new.1\n"} {
		if code != 0 || !strings.Contains(stdout, s) || strings.Contains(stdout, "last attempt") {
			t.Fatalf("detail of a pending change: exit %d, stdout lacks %q:\n%s", code, s, stdout)
		}
	}

	stdout, _, code = runCmd(cmdInstallations, f.args("web")...)
	for _, s := range []string{"name:", "acme/web", "tag v1.2 (commit " + commitB + ")", "repository url:", "2 from alpine/3.20, profiles default, project default",
		"health command:", "wget -q", "last operation:", "web.2 change-channel succeeded (4/4 steps)", "observed instances:", "web-2", "aaaaaaaaaaaa", "stopped"} {
		if code != 0 || !strings.Contains(stdout, s) {
			t.Fatalf("detail: exit %d, stdout lacks %q:\n%s", code, s, stdout)
		}
	}

	stdout, _, code = runCmd(cmdInstallations, f.args("--json")...)
	var list struct{ Installations []api.Installation }
	if err := json.Unmarshal([]byte(stdout), &list); code != 0 || err != nil || !jsonEqual(list.Installations, f.installations) {
		t.Fatalf("--json: exit %d, stdout:\n%s", code, stdout)
	}
	stdout, _, code = runCmd(cmdInstallations, f.args("web", "--json")...)
	var v api.Installation
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil || !jsonEqual(v, f.installations[0]) {
		t.Fatalf("web --json: exit %d, stdout:\n%s", code, stdout)
	}

	_, stderr, code = runCmd(cmdInstallations, f.args("nope")...)
	if code != 1 || !strings.Contains(stderr, "no installation nope") {
		t.Fatalf("unknown: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = runCmd(cmdInstallations, f.args("a", "b")...)
	if code != 2 || !strings.Contains(stderr, "usage: uplink installations") {
		t.Fatalf("two names: exit %d, stderr %q", code, stderr)
	}
}

// TestHistory: the table and --json.
func TestHistory(t *testing.T) {
	clearUplinkEnv(t)
	f := newFakeAPI(t)
	f.history["web"] = []api.HistoryEntry{
		{From: &api.Channel{Branch: "main"}, To: api.Channel{Commit: commitB, Tag: "v1.2"}, Commit: commitB,
			At: testTime.Add(time.Hour), Operation: "web.2", Result: api.Running},
		{To: api.Channel{Branch: "main"}, Commit: commitA, At: testTime, Operation: "web.1", Result: api.Succeeded},
	}
	stdout, stderr, code := runCmd(cmdHistory, f.args("web")...)
	when1, when2 := localTime(testTime.Add(time.Hour)), localTime(testTime)
	want := "WHEN                 FROM         TO           COMMIT        OPERATION  RESULT\n" +
		when1 + "  branch main  tag v1.2     bbbbbbbbbbbb  web.2      running\n" +
		when2 + "  -            branch main  aaaaaaaaaaaa  web.1      succeeded\n"
	if code != 0 || stdout != want {
		t.Fatalf("exit %d, stdout:\n%s\nwant:\n%s\nstderr:\n%s", code, stdout, want, stderr)
	}
	stdout, _, code = runCmd(cmdHistory, f.args("web", "--json")...)
	var h struct{ History []api.HistoryEntry }
	if err := json.Unmarshal([]byte(stdout), &h); code != 0 || err != nil || !jsonEqual(h.History, f.history["web"]) {
		t.Fatalf("--json: exit %d, stdout:\n%s", code, stdout)
	}
	_, stderr, code = runCmd(cmdHistory, f.args("nope")...)
	if code != 1 || !strings.Contains(stderr, "no installation nope") {
		t.Fatalf("unknown: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = runCmd(cmdHistory, f.args()...)
	if code != 2 || !strings.Contains(stderr, "usage: uplink history") {
		t.Fatalf("no name: exit %d, stderr %q", code, stderr)
	}
}

// TestRunDispatch: run knows the new commands.
func TestRunDispatch(t *testing.T) {
	clearUplinkEnv(t)
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	defer func(f *os.File) { os.Stdout = f }(os.Stdout)
	os.Stdout = null
	var help bytes.Buffer
	if code := execute([]string{"--help"}, &help, io.Discard); code != 0 {
		t.Fatalf("uplink --help: exit %d", code)
	}
	for _, cmd := range []string{"installations", "channel", "ops", "history"} {
		if code := run([]string{cmd, "-h"}); code != 0 {
			t.Errorf("uplink %s -h: exit %d", cmd, code)
		}
		if !strings.Contains(help.String(), "\n  "+cmd+" ") {
			t.Errorf("the usage does not name %s:\n%s", cmd, help.String())
		}
	}
}

func mustJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// jsonEqual compares as the API would: through JSON.
func jsonEqual(a, b any) bool {
	var x, y any
	json.Unmarshal([]byte(mustJSON(a)), &x)
	json.Unmarshal([]byte(mustJSON(b)), &y)
	return reflect.DeepEqual(x, y)
}
