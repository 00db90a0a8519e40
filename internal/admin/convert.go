// Conversions between the domain's values and the API's wire types
// (internal/api): what leaves here is what docs/api.md promises, and
// nothing a record keeps only to run the service. Where the two types
// have the same fields a Go conversion does it, so that a field added to
// the domain's type stops the build here until the API decides on it.

package admin

import (
	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/api"
)

// mapSlice converts each element, keeping nil nil (JSON null) and empty
// empty (JSON []).
func mapSlice[T, U any](in []T, f func(T) U) []U {
	if in == nil {
		return nil
	}
	out := make([]U, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}

func apiEndpoint(e *operation.Endpoint) *api.Endpoint {
	if e == nil {
		return nil
	}
	return &api.Endpoint{Channel: api.Channel(instance.ChannelOf(*e)), Resolved: e.Resolved}
}

// apiOperation leaves out the lease and the attempt count: they change
// while nothing an operator sees does.
func apiOperation(op *operation.Operation) *api.Operation {
	if op == nil {
		return nil
	}
	return &api.Operation{
		ID: op.ID, Kind: api.Kind(op.Kind), Installation: op.Installation, State: api.State(op.State),
		From: apiEndpoint(op.From), To: apiEndpoint(op.To), Commit: op.Commit,
		Steps: mapSlice(op.Steps, func(s operation.Step) api.Step {
			return api.Step{Name: s.Name, State: api.StepState(s.State), StartedAt: s.StartedAt, FinishedAt: s.FinishedAt}
		}),
		Progress: api.Progress{Done: op.Progress.Done, Total: op.Progress.Total},
		Log: mapSlice(op.Log, func(l operation.LogLine) api.LogLine {
			return api.LogLine{At: l.At, Line: l.Line}
		}),
		Error: op.Error, CreatedAt: op.CreatedAt, StartedAt: op.StartedAt, FinishedAt: op.FinishedAt,
	}
}

func apiAttempt(a *instance.Attempt) *api.Attempt {
	if a == nil {
		return nil
	}
	return &api.Attempt{Channel: api.Channel(a.Channel), Commit: a.Commit, Operation: a.Operation, Error: a.Error}
}

func apiSpec(s instance.Spec) api.Spec {
	return api.Spec{App: s.App, Package: s.Package, Channel: api.Channel(s.Channel), Instances: api.Instances(s.Instances),
		PublicKey: s.PublicKey, KeyName: s.KeyName, HealthCommand: s.HealthCommand}
}

func domainSpec(s api.Spec) instance.Spec {
	return instance.Spec{App: s.App, Package: s.Package, Channel: instance.Channel(s.Channel), Instances: instance.Instances(s.Instances),
		PublicKey: s.PublicKey, KeyName: s.KeyName, HealthCommand: s.HealthCommand}
}

func apiInstallation(v instance.View) api.Installation {
	return api.Installation{
		Name: v.Name, Spec: apiSpec(v.Spec), ResolvedCommit: v.ResolvedCommit, RepositoryURL: v.RepositoryURL,
		Observed:      mapSlice(v.Observed, func(i instance.Instance) api.Instance { return api.Instance(i) }),
		LastOperation: apiOperation(v.LastOperation), CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt,
		Pending: apiAttempt(v.Pending), LastAttempt: apiAttempt(v.LastAttempt),
	}
}

func apiHistoryEntry(h instance.HistoryEntry) api.HistoryEntry {
	var from *api.Channel
	if h.From != nil {
		c := api.Channel(*h.From)
		from = &c
	}
	return api.HistoryEntry{From: from, To: api.Channel(h.To), Commit: h.Commit, At: h.At, Operation: h.Operation, Result: api.State(h.Result)}
}

func apiKey(k distribution.KeyInfo) api.Key {
	return api.Key(k)
}

func apiApp(app artifact.App, s distribution.AppSettings) api.App {
	return api.App{App: app.String(), AllowUnsigned: s.AllowUnsigned, Keys: mapSlice(s.Infos(), apiKey), Retention: apiRetention(s.Retention)}
}

func apiBuild(b ref.Build) api.Build {
	return api.Build(b)
}

func apiPointers(m map[string]ref.Pointer) map[string]api.Pointer {
	if m == nil {
		return nil
	}
	out := make(map[string]api.Pointer, len(m))
	for k, p := range m {
		out[k] = api.Pointer(p)
	}
	return out
}

func apiRefs(r ref.Refs) api.Refs {
	return api.Refs{Branches: apiPointers(r.Branches), Tags: apiPointers(r.Tags)}
}

func domainPublish(r api.PublishRequest) ref.PublishRequest {
	return ref.PublishRequest(r)
}
