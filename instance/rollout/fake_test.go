package rollout

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkhq/uplink/instance/incus"
)

// fakeIncus is a Client of one project that answers from fixed data;
// the calls it does not implement panic (the embedded nil interface).
type fakeIncus struct {
	Client
	project   string
	instances []incus.Instance
	networks  []incus.Network
	leases    map[string][]incus.NetworkLease // by network
	files     map[string]string               // "<instance>:<path>"
	err       error                           // every call fails with it

	mu    sync.Mutex
	calls []string
}

func (f *fakeIncus) call(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

func (f *fakeIncus) count(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func (f *fakeIncus) GetInstancesWithFilter(_ context.Context, _ incus.InstanceType, filters []string) ([]incus.Instance, error) {
	f.call("list " + strings.Join(filters, " "))
	if f.err != nil {
		return nil, f.err
	}
	var out []incus.Instance
	for _, in := range f.instances {
		match := true
		for _, fl := range filters {
			k, v, _ := strings.Cut(strings.TrimPrefix(fl, "config."), "=")
			match = match && in.Config[k] == v
		}
		if match {
			out = append(out, in)
		}
	}
	return out, nil
}

func (f *fakeIncus) GetInstanceFile(_ context.Context, name, path string) (io.ReadCloser, *incus.InstanceFileResponse, error) {
	f.call("file " + name + ":" + path)
	if f.err != nil {
		return nil, nil, f.err
	}
	s, ok := f.files[name+":"+path]
	if s == unreadable {
		return nil, nil, incus.StatusErrorf(http.StatusInternalServerError, "input/output error")
	}
	if !ok {
		return nil, nil, incus.StatusErrorf(http.StatusNotFound, "not found")
	}
	return io.NopCloser(strings.NewReader(s)), &incus.InstanceFileResponse{Type: "file"}, nil
}

func (f *fakeIncus) GetNetworks(context.Context) ([]incus.Network, error) {
	f.call("networks")
	return f.networks, f.err
}

func (f *fakeIncus) GetNetworkLeases(_ context.Context, network string) ([]incus.NetworkLease, error) {
	f.call("leases " + network)
	return f.leases[network], f.err
}

// unreadable, as the content of a file, makes reading it fail.
const unreadable = "\x00unreadable"

// projects serves each project from its fake, an empty one by default.
func projectsOf(fakes ...*fakeIncus) Projects {
	return func(project string) Client {
		for _, f := range fakes {
			if f.project == project {
				return f
			}
		}
		return &fakeIncus{project: project}
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
