package instance

import "context"

// Observer reads what runs: the instances of installations, as Incus reports them.
type Observer interface {
	// Observe lists, in one Incus call per project, the instances of the named installations.
	Observe(ctx context.Context, project string, installations []string) map[string][]Instance
}
