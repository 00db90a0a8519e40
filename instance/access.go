package instance

import (
	"context"
	"slices"

	"github.com/uplinkhq/uplink/distribution/artifact"
)

// Names lists the live installations with their instance projects.
func (s *Service) Names(ctx context.Context) (map[string]string, error) {
	rs, err := s.records(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, r := range rs {
		if !r.deleted() {
			out[r.Name] = r.Spec.Instances.Project
		}
	}
	return out, nil
}

// Projects lists the instance projects of app's installations (the
// projects whose instances may read app's repositories).
func (s *Service) Projects(ctx context.Context, app artifact.App) ([]string, error) {
	rs, err := s.records(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rs {
		if !r.deleted() && r.Spec.App == app.String() && !slices.Contains(out, r.Spec.Instances.Project) {
			out = append(out, r.Spec.Instances.Project)
		}
	}
	return out, nil
}
