package instance

import (
	"testing"

	ops "github.com/uplinkhq/uplink/operation"
)

func TestRepositoriesKeepsTheImagesLines(t *testing.T) {
	cur := "https://dl-cdn.alpinelinux.org/alpine/v3.20/main\n# a comment\nhttp://uplink:4080/distribution/main/acme/hello\nhttp://uplink:4080/distribution/main/acme/other\n"
	got := repositories(cur, "acme/hello", "http://uplink:4080/distribution/0123abc/acme/hello")
	want := "https://dl-cdn.alpinelinux.org/alpine/v3.20/main\n# a comment\nhttp://uplink:4080/distribution/main/acme/other\nhttp://uplink:4080/distribution/0123abc/acme/hello\n"
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if got := repositories("", "acme/hello", "http://u/distribution/main/acme/hello"); got != "http://u/distribution/main/acme/hello\n" {
		t.Fatalf("empty file: %q", got)
	}
}

func TestStepsAndNames(t *testing.T) {
	b := NewBackend(BackendConfig{})
	op := &ops.Operation{ID: "web.12", Installation: "web", Kind: ops.KindChangeChannel}
	steps := b.Steps(op, ops.Target{Count: 2})
	if len(steps) != 2*len(bootstrapSteps)+1 || steps[0] != "create-instance-1" || steps[len(bootstrapSteps)] != "create-instance-2" {
		t.Fatalf("steps: %v", steps)
	}
	if a, i := step("remove-old-instance-2"); a != "remove-old-instance" || i != 2 {
		t.Fatalf("step: %s %d", a, i)
	}
	if n := newName(op, 2); n != "web-12-2" {
		t.Fatalf("name %s", n)
	}
	if d, ok := (&Backend{cfg: BackendConfig{ProxyConnect: "tcp:127.0.0.1:9999"}}).proxyDevice("http://127.0.0.1:4080/distribution/main/acme/hello"); !ok || d["listen"] != "tcp:127.0.0.1:4080" || d["connect"] != "tcp:127.0.0.1:9999" {
		t.Fatalf("proxy device: %v", d)
	}
	if s := (&Backend{}).source("0123456789abcdef"); s.Fingerprint == "" {
		t.Fatalf("fingerprint source: %+v", s)
	}
	if s := (&Backend{}).source("alpine/3.20"); s.Alias != "alpine/3.20" {
		t.Fatalf("alias source: %+v", s)
	}
}
