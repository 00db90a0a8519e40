// Conversions between the domain's values and the API's wire types
// (internal/api): what leaves here is what docs/api.md promises, and
// nothing a record keeps only to run the service.

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

func apiChannel(c instance.Channel) api.Channel {
	return api.Channel{Branch: c.Branch, Commit: c.Commit, Tag: c.Tag}
}

func domainChannel(c api.Channel) instance.Channel {
	return instance.Channel{Branch: c.Branch, Commit: c.Commit, Tag: c.Tag}
}

func apiEndpoint(e *operation.Endpoint) *api.Endpoint {
	if e == nil {
		return nil
	}
	return &api.Endpoint{Channel: apiChannel(instance.ChannelOf(*e)), Resolved: e.Resolved}
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
	return &api.Attempt{Channel: apiChannel(a.Channel), Commit: a.Commit, Operation: a.Operation, Error: a.Error}
}

func apiSpec(s instance.Spec) api.Spec {
	in := s.Instances
	return api.Spec{
		App: s.App, Package: s.Package, Channel: apiChannel(s.Channel),
		Instances: api.Instances{Count: in.Count, Image: in.Image, Profiles: in.Profiles, Project: in.Project},
		PublicKey: s.PublicKey, KeyName: s.KeyName, HealthCommand: s.HealthCommand,
	}
}

func domainSpec(s api.Spec) instance.Spec {
	in := s.Instances
	return instance.Spec{
		App: s.App, Package: s.Package, Channel: domainChannel(s.Channel),
		Instances: instance.Instances{Count: in.Count, Image: in.Image, Profiles: in.Profiles, Project: in.Project},
		PublicKey: s.PublicKey, KeyName: s.KeyName, HealthCommand: s.HealthCommand,
	}
}

func apiInstallation(v instance.View) api.Installation {
	return api.Installation{
		Name: v.Name, Spec: apiSpec(v.Spec), ResolvedCommit: v.ResolvedCommit, RepositoryURL: v.RepositoryURL,
		Observed: mapSlice(v.Observed, func(i instance.Instance) api.Instance {
			return api.Instance{Name: i.Name, Commit: i.Commit, State: i.State, Version: i.Version, Arch: i.Arch}
		}),
		LastOperation: apiOperation(v.LastOperation), CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt,
		Pending: apiAttempt(v.Pending), LastAttempt: apiAttempt(v.LastAttempt),
	}
}

func apiHistoryEntry(h instance.HistoryEntry) api.HistoryEntry {
	var from *api.Channel
	if h.From != nil {
		c := apiChannel(*h.From)
		from = &c
	}
	return api.HistoryEntry{From: from, To: apiChannel(h.To), Commit: h.Commit, At: h.At, Operation: h.Operation, Result: api.State(h.Result)}
}

func apiKey(k distribution.KeyInfo) api.Key {
	return api.Key{Name: k.Name, Fingerprint: k.Fingerprint, CreatedAt: k.CreatedAt}
}

func apiApp(app artifact.App, s distribution.AppSettings) api.App {
	return api.App{App: app.String(), AllowUnsigned: s.AllowUnsigned, Keys: mapSlice(s.Infos(), apiKey)}
}

func apiBuild(b ref.Build) api.Build {
	return api.Build{Commit: b.Commit, Branch: b.Branch, Tags: b.Tags, Archs: b.Archs, Message: b.Message, Author: b.Author, PublishedAt: b.PublishedAt}
}

func apiPointers(m map[string]ref.Pointer) map[string]api.Pointer {
	if m == nil {
		return nil
	}
	out := make(map[string]api.Pointer, len(m))
	for k, p := range m {
		out[k] = api.Pointer{Commit: p.Commit, UpdatedAt: p.UpdatedAt}
	}
	return out
}

func apiRefs(r ref.Refs) api.Refs {
	return api.Refs{Branches: apiPointers(r.Branches), Tags: apiPointers(r.Tags)}
}

func domainPublish(r api.PublishRequest) ref.PublishRequest {
	return ref.PublishRequest{Commit: r.Commit, Branch: r.Branch, Tags: r.Tags, Message: r.Message, Author: r.Author}
}
