package instance_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/uplinkhq/uplink/instance"
)

// fakeObserver reports one running instance per installation it is asked
// about, and records the calls.
type fakeObserver struct {
	mu    sync.Mutex
	calls map[string][][]string
}

func (o *fakeObserver) Observe(_ context.Context, project string, names []string) map[string][]instance.Instance {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.calls == nil {
		o.calls = map[string][][]string{}
	}
	o.calls[project] = append(o.calls[project], slices.Clone(names))
	out := map[string][]instance.Instance{}
	for _, n := range names {
		if n != "silent" {
			out[n] = []instance.Instance{{Name: n + "-1", State: "Running"}}
		}
	}
	return out
}

func TestViewsObserveOncePerProject(t *testing.T) {
	e := newEnv(t)
	obs := &fakeObserver{}
	e.bare(obs)
	e.publish("A", "main", "1.0-r0")
	for name, project := range map[string]string{"a": "p1", "b": "p1", "silent": "p1", "c": "p2"} {
		spec := e.spec(mainBranch)
		spec.Instances.Project = project
		e.putNamed(name, spec)
	}
	obs.calls = nil

	views, err := e.svc.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(obs.calls) != 2 || len(obs.calls["p1"]) != 1 || len(obs.calls["p2"]) != 1 {
		t.Fatalf("List observed %v, want one call per project", obs.calls)
	}
	if got := obs.calls["p1"][0]; !slices.Equal(got, []string{"a", "b", "silent"}) {
		t.Fatalf("p1 asked for %v", got)
	}
	for _, v := range views {
		want := 1
		if v.Name == "silent" {
			want = 0
		}
		if v.Observed == nil || len(v.Observed) != want || want == 1 && v.Observed[0].Name != v.Name+"-1" {
			t.Fatalf("%s observed %+v", v.Name, v.Observed)
		}
	}

	obs.calls = nil
	v, err := e.svc.Get(context.Background(), "c")
	if err != nil {
		t.Fatal(err)
	}
	if len(obs.calls) != 1 || !slices.Equal(obs.calls["p2"][0], []string{"c"}) || len(v.Observed) != 1 {
		t.Fatalf("Get observed %v, view %+v", obs.calls, v.Observed)
	}
}

func TestViewsWithoutObserver(t *testing.T) {
	e := newEnv(t)
	e.bare(nil)
	e.publish("A", "main", "1.0-r0")
	v, _, _ := e.put(mainBranch)
	if v.Observed == nil || len(v.Observed) != 0 {
		t.Fatalf("observed %#v, want an empty list", v.Observed)
	}
}
