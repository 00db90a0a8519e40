package incus

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestGetInstances(t *testing.T) {
	forDialects(t, func(t *testing.T, f *fakeDaemon) {
		f.reply("GET /1.0/instances", 200, syncBody("["+instanceJSON+"]"))
		c := f.connect()
		list, err := c.GetInstancesWithFilter(testCtx(t), InstanceTypeAny, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Name != "c1" || list[0].StatusCode != Running || list[0].Type != InstanceTypeContainer ||
			list[0].Config["user.uplink.pin"] != "branch:main" || list[0].Architecture != "x86_64" {
			t.Fatalf("list = %+v", list)
		}
		if q := f.requests()[0].RawQuery; q != "recursion=1" {
			t.Errorf("query %q", q)
		}
	})
}

// TestFilter checks how filters are written: the server splits them on
// spaces and takes the words of a quoted value together.
func TestFilter(t *testing.T) {
	forDialects(t, func(t *testing.T, f *fakeDaemon) {
		f.reply("GET /1.0/instances", 200, syncBody("[]"))
		c := f.connect().UseProject("acme.app")
		list, err := c.GetInstancesWithFilter(testCtx(t), InstanceTypeContainer, []string{
			"config.user.uplink.installation=42", "status=Running", "description=two words", "expanded_config.user.managed_by ne other",
		})
		if err != nil || list == nil {
			t.Fatal(list, err)
		}
		q, _ := url.ParseQuery(f.requests()[0].RawQuery)
		want := url.Values{
			"recursion":     {"1"},
			"instance-type": {"container"},
			"project":       {"acme.app"},
			"filter": {`config.user.uplink.installation eq 42 and status eq Running and description eq "two words" and ` +
				`expanded_config.user.managed_by ne other`},
		}
		if !reflect.DeepEqual(q, want) {
			t.Errorf("query %v\nwant  %v", q, want)
		}
	})
	if got := parseFilters(nil); got != "" {
		t.Errorf("no filters: %q", got)
	}
	f := newFake(t, DialectLXD)
	f.server = strings.Replace(f.server, `"api_filtering",`, "", 1)
	if _, err := f.connect().GetInstancesWithFilter(testCtx(t), "", []string{"status=Running"}); !errors.Is(err, ErrMissingExtension) {
		t.Errorf("without api_filtering: %v", err)
	}
}

func TestGetInstance(t *testing.T) {
	forDialects(t, func(t *testing.T, f *fakeDaemon) {
		f.handle("GET /1.0/instances/c1", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"abc123"`)
			writeBody(w, 200, syncBody(instanceJSON))
		})
		c := f.connect()
		inst, etag, err := c.GetInstance(testCtx(t), "c1")
		if err != nil {
			t.Fatal(err)
		}
		if etag != `"abc123"` || inst.Name != "c1" || inst.Profiles[0] != "default" {
			t.Errorf("instance %+v, etag %q", inst, etag)
		}
	})
}

// TestCreateInstance checks the body of a create from each kind of
// source, and that a create is only a create.
func TestCreateInstance(t *testing.T) {
	sources := map[string]InstanceSource{
		"alias":       {Type: "image", Alias: "alpine/3.20"},
		"fingerprint": {Type: "image", Fingerprint: "2349e2"},
		"remote":      {Type: "image", Mode: "pull", Protocol: "simplestreams", Server: "https://images.linuxcontainers.org", Alias: "alpine/3.20"},
	}
	for name, src := range sources {
		t.Run(name, func(t *testing.T) {
			forDialects(t, func(t *testing.T, f *fakeDaemon) {
				f.reply("POST /1.0/instances", 202, asyncBody("create1"))
				f.reply("GET /1.0/operations/create1/wait", 200, syncBody(opJSON("create1", Success, "", "")))
				c := f.connect()
				op, err := c.CreateInstance(testCtx(t), InstancesPost{
					Name: "acme-app-01", Type: InstanceTypeContainer, Source: src,
					InstancePut: InstancePut{Profiles: []string{"default"}, Config: map[string]string{"user.managed_by": "uplink"}},
				})
				if err != nil {
					t.Fatal(err)
				}
				if err := op.WaitContext(testCtx(t)); err != nil {
					t.Fatal(err)
				}
				var body map[string]any
				var post InstancesPost
				raw := f.request("POST", "/1.0/instances").Body
				json.Unmarshal(raw, &body)
				json.Unmarshal(raw, &post)
				if post.Source != src || post.Name != "acme-app-01" || post.Type != "container" || post.Profiles[0] != "default" {
					t.Errorf("body %s", f.request("POST", "/1.0/instances").Body)
				}
				if _, ok := body["start"]; ok || len(f.requests()) != 2 {
					t.Errorf("start %v; requests: %s", body["start"], f.summary())
				}
			})
		})
	}
}

func TestCreateInstanceFailures(t *testing.T) {
	forDialects(t, func(t *testing.T, f *fakeDaemon) {
		f.reply("POST /1.0/instances", 202, asyncBody("create1"))
		f.reply("GET /1.0/operations/create1/wait", 200,
			syncBody(opJSON("create1", Failure, "Failed creating instance from image: Image not found", "")))
		c := f.connect()
		op, err := c.CreateInstance(testCtx(t), InstancesPost{Name: "c1", Source: InstanceSource{Type: "image", Alias: "nope"}})
		if err != nil {
			t.Fatal(err)
		}
		err = op.WaitContext(testCtx(t))
		var opErr *OperationError
		if !errors.As(err, &opErr) || !strings.Contains(err.Error(), "Image not found") {
			t.Fatalf("err = %v", err)
		}
		for _, r := range f.requests() {
			if r.Method == "PUT" {
				t.Errorf("started a failed create: %s", f.summary())
			}
		}
	})
}

func TestPatchInstance(t *testing.T) {
	forDialects(t, func(t *testing.T, f *fakeDaemon) {
		f.reply("PATCH /1.0/instances/c1", 200, syncBody("{}"))
		c := f.connect()
		err := c.PatchInstance(testCtx(t), "c1", InstancePut{Config: map[string]string{"user.uplink.pin": "commit:abc123"}}, `"abc"`)
		if err != nil {
			t.Fatal(err)
		}
		r := f.request("PATCH", "/1.0/instances/c1")
		if string(r.Body) != `{"config":{"user.uplink.pin":"commit:abc123"}}` {
			t.Errorf("body %s", r.Body)
		}
		if r.Header.Get("If-Match") != `"abc"` || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("headers %v", r.Header)
		}
	})
}

func TestUpdateInstanceState(t *testing.T) {
	stopped := "The instance is already stopped"
	cases := []struct {
		name    string
		action  string
		waits   []reply
		get     reply
		wantErr string
	}{
		{"stop", "stop", []reply{{200, syncBody(opJSON("s1", Success, "", ""))}}, reply{}, ""},
		{"stop already stopped", "stop", []reply{{200, syncBody(opJSON("s1", Failure, stopped, ""))}}, reply{}, ""},
		{"stop already stopped, incus 6.0", "stop", []reply{{200, errorBody(400, stopped)}},
			reply{200, syncBody(opJSON("s1", Failure, stopped, ""))}, ""},
		{"stop already stopped, incus 6.0, gone", "stop", []reply{{200, errorBody(400, stopped)}},
			reply{404, errorBody(404, "Operation not found")}, ""},
		{"stop fails", "stop", []reply{{200, syncBody(opJSON("s1", Failure, "Failed to stop", ""))}}, reply{}, "Failed to stop"},
		{"start of a started instance is not masked", "start",
			[]reply{{200, syncBody(opJSON("s1", Failure, "The instance is already running", ""))}}, reply{}, "already running"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forDialects(t, func(t *testing.T, f *fakeDaemon) {
				f.reply("PUT /1.0/instances/c1/state", 202, asyncBody("s1"))
				f.script("GET /1.0/operations/s1/wait", tc.waits...)
				if tc.get.status != 0 {
					f.reply("GET /1.0/operations/s1", tc.get.status, tc.get.body)
				}
				c := f.connect()
				op, err := c.UpdateInstanceState(testCtx(t), "c1", InstanceStatePut{Action: tc.action, Timeout: 30, Force: true}, "")
				if err != nil {
					t.Fatal(err)
				}
				err = op.WaitContext(testCtx(t))
				if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				body := string(f.request("PUT", "/1.0/instances/c1/state").Body)
				if want := `{"action":"` + tc.action + `","timeout":30,"force":true,"stateful":false}`; body != want {
					t.Errorf("body %s, want %s", body, want)
				}
			})
		})
	}
	// Some versions refuse at once instead of in the operation.
	f := newFake(t, DialectLXD)
	f.reply("PUT /1.0/instances/c1/state", 400, errorBody(400, stopped))
	op, err := f.connect().UpdateInstanceState(testCtx(t), "c1", InstanceStatePut{Action: "stop"}, "")
	if err != nil || op.WaitContext(testCtx(t)) != nil {
		t.Fatalf("sync already stopped: %v", err)
	}
}

func TestDeleteInstance(t *testing.T) {
	forDialects(t, func(t *testing.T, f *fakeDaemon) {
		f.reply("DELETE /1.0/instances/c1", 202, asyncBody("d1"))
		f.reply("GET /1.0/operations/d1/wait", 200, syncBody(opJSON("d1", Success, "", "")))
		c := f.connect()
		op, err := c.DeleteInstance(testCtx(t), "c1")
		if err != nil || op.WaitContext(testCtx(t)) != nil {
			t.Fatal(err)
		}
		op, err = c.DeleteInstance(testCtx(t), "missing")
		if !IsNotFound(err) || op != nil {
			t.Errorf("delete missing: %v", err)
		}
	})
}

// execOutputPath is where each daemon records exec output.
func execOutputPath(d Dialect, op, stream string) string {
	if d == DialectIncus {
		return "/1.0/instances/c1/logs/exec-output/exec_" + op + "." + stream
	}
	return "/1.0/instances/c1/logs/exec_" + op + "." + stream
}

// serveExec makes the fake run one exec as operation e1, its waits
// answered in turn by waits, its output served at the dialect's own paths
// (Incus refuses the LXD form).
func serveExec(f *fakeDaemon, waits ...reply) {
	f.reply("POST /1.0/instances/c1/exec", 202, asyncBody("e1"))
	f.script("GET /1.0/operations/e1/wait", waits...)
	for stream, content := range map[string]string{"stdout": "fake apk: update\n", "stderr": "warning\n"} {
		p := execOutputPath(f.dialect, "e1", stream)
		f.handle("GET "+p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			io.WriteString(w, content)
		})
		f.reply("DELETE "+p, 200, syncBody("{}"))
	}
	// Incus rejects the LXD form.
	f.reply("GET /1.0/instances/c1/logs/{file}", 400, errorBody(400, `Log file name "exec_e1.stdout" not valid`))
}

// execMetadata is the metadata of a finished exec with recorded output.
func execMetadata(d Dialect, code int) string {
	return `{"return":` + strconv.Itoa(code) + `,"output":{"1":"` + execOutputPath(d, "e1", "stdout") +
		`","2":"` + execOutputPath(d, "e1", "stderr") + `"}}`
}

func TestExecInstance(t *testing.T) {
	forDialects(t, func(t *testing.T, f *fakeDaemon) {
		serveExec(f, reply{200, syncBody(opJSON("e1", Running, "", ""))},
			reply{200, syncBody(opJSON("e1", Success, "", execMetadata(f.dialect, 3)))})
		c := f.connect()
		var stdout, stderr bytes.Buffer
		code, err := c.ExecInstance(testCtx(t), "c1", InstanceExecPost{
			Command: []string{"/bin/sh", "-c", "apk update"}, Environment: map[string]string{"FOO": "bar"}, Cwd: "/",
		}, &InstanceExecArgs{Stdout: &stdout, Stderr: &stderr})
		if err != nil || code != 3 {
			t.Fatalf("code %d, err %v; a non-zero exit is not an error", code, err)
		}
		if stdout.String() != "fake apk: update\n" || stderr.String() != "warning\n" {
			t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
		}
		var post map[string]any
		json.Unmarshal(f.request("POST", "/1.0/instances/c1/exec").Body, &post)
		want := map[string]any{"command": []any{"/bin/sh", "-c", "apk update"}, "environment": map[string]any{"FOO": "bar"},
			"wait-for-websocket": false, "interactive": false, "record-output": true, "user": 0.0, "group": 0.0, "cwd": "/"}
		if !reflect.DeepEqual(post, want) {
			t.Errorf("exec body %v", post)
		}
		for _, s := range []string{"stdout", "stderr"} {
			f.request("GET", execOutputPath(f.dialect, "e1", s))
			f.request("DELETE", execOutputPath(f.dialect, "e1", s))
		}
	})
}

// TestExecExitCodes: only a command that cannot run (126, 127) fails the
// operation; its output is still collected and deleted.
func TestExecExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		waits func(d Dialect) []reply
		get   func(d Dialect) reply
		code  int
		err   string
	}{
		{"zero", func(d Dialect) []reply {
			return []reply{{200, syncBody(opJSON("e1", Success, "", execMetadata(d, 0)))}}
		}, nil, 0, ""},
		{"127", func(d Dialect) []reply {
			return []reply{{200, syncBody(opJSON("e1", Failure, "Command not found", execMetadata(d, 127)))}}
		}, nil, 127, "Command not found"},
		{"127 incus 6.0", func(d Dialect) []reply { return []reply{{200, errorBody(400, "Command not found")}} },
			func(d Dialect) reply {
				return reply{200, syncBody(opJSON("e1", Failure, "Command not found", execMetadata(d, 127)))}
			}, 127, "Command not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forDialects(t, func(t *testing.T, f *fakeDaemon) {
				serveExec(f, tc.waits(f.dialect)...)
				if tc.get != nil {
					r := tc.get(f.dialect)
					f.reply("GET /1.0/operations/e1", r.status, r.body)
				}
				var out bytes.Buffer
				code, err := f.connect().ExecInstance(testCtx(t), "c1", InstanceExecPost{Command: []string{"nope"}},
					&InstanceExecArgs{Stdout: &out, Stderr: &out})
				if code != tc.code || tc.err == "" && err != nil || tc.err != "" && (err == nil || err.Error() != tc.err) {
					t.Fatalf("code %d, err %v; want %d, %q", code, err, tc.code, tc.err)
				}
				if out.String() != "fake apk: update\nwarning\n" {
					t.Errorf("output %q", out.String())
				}
				f.request("DELETE", execOutputPath(f.dialect, "e1", "stdout"))
				f.request("DELETE", execOutputPath(f.dialect, "e1", "stderr"))
			})
		})
	}
}

func TestExecInstanceErrors(t *testing.T) {
	forDialects(t, func(t *testing.T, f *fakeDaemon) {
		f.reply("POST /1.0/instances/stopped/exec", 400, errorBody(400, "Instance is not running"))
		f.reply("POST /1.0/instances/c1/exec", 202, asyncBody("e1"))
		f.reply("GET /1.0/operations/e1/wait", 200, syncBody(opJSON("e1", Success, "", `{"return":0}`)))
		c := f.connect()
		code, err := c.ExecInstance(testCtx(t), "stopped", InstanceExecPost{Command: []string{"true"}}, nil)
		var se *StatusError
		if !errors.As(err, &se) || se.Status() != 400 || code != -1 {
			t.Errorf("exec in a stopped instance: %d, %v", code, err)
		}
		if _, err := c.ExecInstance(testCtx(t), "c1", InstanceExecPost{Command: []string{"sh"}, WaitForWS: true}, nil); err == nil {
			t.Error("websocket exec accepted")
		}
		// Without writers nothing is recorded, and the code still comes back.
		code, err = c.ExecInstance(testCtx(t), "c1", InstanceExecPost{Command: []string{"true"}}, nil)
		if err != nil || code != 0 {
			t.Errorf("plain exec: %d, %v", code, err)
		}
		if b := string(f.request("POST", "/1.0/instances/c1/exec").Body); !strings.Contains(b, `"record-output":false`) {
			t.Errorf("exec body %s", b)
		}
	})
}

func TestCreateInstanceFile(t *testing.T) {
	forDialects(t, func(t *testing.T, f *fakeDaemon) {
		f.reply("POST /1.0/instances/c1/files", 200, syncBody("{}"))
		c := f.connect()
		key := "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"
		err := c.CreateInstanceFile(testCtx(t), "c1", "/etc/apk/keys/acme app.rsa.pub", InstanceFileArgs{
			Content: strings.NewReader(key), UID: 0, GID: 0, Mode: 0o644, Type: "file", WriteMode: "overwrite",
		})
		if err != nil {
			t.Fatal(err)
		}
		r := f.requests()[0]
		if p, _ := url.ParseQuery(r.RawQuery); p.Get("path") != "/etc/apk/keys/acme app.rsa.pub" {
			t.Errorf("query %q", r.RawQuery)
		}
		if string(r.Body) != key {
			t.Errorf("body %q", r.Body)
		}
		want := map[string]string{"uid": "0", "gid": "0", "mode": "0644", "type": "file", "write": "overwrite"}
		for _, prefix := range []string{"X-Incus-", "X-LXD-"} {
			for k, v := range want {
				if got := r.Header.Get(prefix + k); got != v {
					t.Errorf("%s%s = %q, want %q", prefix, k, got, v)
				}
			}
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("Content-Type %q", ct)
		}

		// A directory: no content, but still octet-stream; unset owner and
		// mode are left to the server.
		err = c.CreateInstanceFile(testCtx(t), "c1", "/etc/uplink", InstanceFileArgs{UID: -1, GID: -1, Type: "directory"})
		if err != nil {
			t.Fatal(err)
		}
		r = f.requests()[1]
		if r.Header.Get("Content-Type") != "application/octet-stream" || len(r.Body) != 0 {
			t.Errorf("directory: %v %q", r.Header, r.Body)
		}
		for _, k := range []string{"X-Incus-Uid", "X-Lxd-Uid", "X-Incus-Gid", "X-Incus-Mode", "X-Lxd-Mode", "X-Incus-Write"} {
			if _, ok := r.Header[k]; ok {
				t.Errorf("%s sent", k)
			}
		}
		if r.Header.Get("X-LXD-type") != "directory" {
			t.Errorf("type not sent")
		}

		err = c.CreateInstanceFile(testCtx(t), "c1", "/usr/local/bin/x", InstanceFileArgs{Content: strings.NewReader("#!/bin/sh\n"), Mode: 0o755})
		if err != nil {
			t.Fatal(err)
		}
		if m := f.requests()[2].Header.Get("X-Incus-mode"); m != "0755" {
			t.Errorf("mode %q", m)
		}
	})
}

func TestGetInstanceFile(t *testing.T) {
	forDialects(t, func(t *testing.T, f *fakeDaemon) {
		// Each daemon answers with its own header prefix.
		prefix := map[Dialect]string{DialectIncus: "X-Incus-", DialectLXD: "X-LXD-"}[f.dialect]
		f.handle("GET /1.0/instances/c1/files", func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Query().Get("path") {
			case "/etc/apk/repositories":
				w.Header().Set(prefix+"uid", "0")
				w.Header().Set(prefix+"gid", "101")
				w.Header().Set(prefix+"mode", "0640")
				w.Header().Set(prefix+"type", "file")
				w.Header().Set("Content-Type", "application/octet-stream")
				io.WriteString(w, "http://127.0.0.1:4080/distribution/main/acme/app\n")
			case "/etc/apk":
				w.Header().Set(prefix+"uid", "0")
				w.Header().Set(prefix+"gid", "0")
				w.Header().Set(prefix+"mode", "0755")
				w.Header().Set(prefix+"type", "directory")
				writeBody(w, 200, syncBody(`["keys","repositories"]`))
			default:
				writeBody(w, 404, errorBody(404, "Not found"))
			}
		})
		c := f.connect()

		rc, resp, err := c.GetInstanceFile(testCtx(t), "c1", "/etc/apk/repositories")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if string(b) != "http://127.0.0.1:4080/distribution/main/acme/app\n" ||
			!reflect.DeepEqual(*resp, InstanceFileResponse{UID: 0, GID: 101, Mode: 0o640, Type: "file"}) {
			t.Errorf("file %q, %+v", b, resp)
		}

		rc, resp, err = c.GetInstanceFile(testCtx(t), "c1", "/etc/apk")
		if err != nil || rc != nil {
			t.Fatal(err, rc)
		}
		if resp.Type != "directory" || resp.Mode != 0o755 || !reflect.DeepEqual(resp.Entries, []string{"keys", "repositories"}) {
			t.Errorf("directory %+v", resp)
		}

		if _, _, err := c.GetInstanceFile(testCtx(t), "c1", "/missing"); !IsNotFound(err) {
			t.Errorf("missing file: %v", err)
		}
		if q := f.requests()[0].RawQuery; q != "path=%2Fetc%2Fapk%2Frepositories" {
			t.Errorf("query %q", q)
		}
	})
}
