package instance

import (
	"context"
	"log/slog"

	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/storage"
)

// KeepOperations is how many finished operations stay in an
// installation's record; older ones move to their own objects.
const KeepOperations = 20

// DefaultKeepHistory and MinKeepHistory bound Config.KeepHistory.
const (
	DefaultKeepHistory = 1000
	MinKeepHistory     = 10
)

// Config wires a Service.
type Config struct {
	Storage storage.Driver
	Refs    *ref.Store
	// Resolver answers what a tracked branch points at now (cached).
	Resolver ref.Resolver
	// DistributionURL is how instances reach the distribution listener,
	// e.g. http://uplink:4080.
	DistributionURL string
	// Wakeup is signalled after an operation is queued (the engine
	// listens on it); may be nil.
	Wakeup *operation.Wakeup
	// DefaultProject is the instance project of installations that name
	// none ("default" when empty).
	DefaultProject string
	// Observer reports installations' instances; nil when there is no
	// instance backend.
	Observer Observer
	// Keys finds the key an installation names by key_name alone; may be
	// nil (public_key is then required).
	Keys KeyLookup
	// Events hears operations start and end; may be nil.
	Events OperationEvents
	// KeepHistory is how many channel-history entries, and how many
	// archived operations, each installation keeps (the newest);
	// DefaultKeepHistory when zero.
	KeepHistory int
	// Logger reports clean-up that failed and is retried later;
	// slog.Default() when nil.
	Logger *slog.Logger
}

// OperationEvents is told, once the journal recorded it, that an
// operation started or ended (notify queues it for webhooks). The engine
// waits on it: it must return quickly (one durable write at most).
type OperationEvents interface {
	OperationStarted(ctx context.Context, op *operation.Operation)
	OperationFinished(ctx context.Context, op *operation.Operation)
}

// Service manages installations and keeps their operations; it is the
// operation.Journal of the engine. Its methods are grouped by concern:
// records.go (load, update, archive), channel.go (Put, SetChannel,
// Delete), journal.go and unfinished.go (the operation journal),
// publish.go, reconcile.go, views.go and access.go.
type Service struct {
	cfg Config
	d   storage.Driver
	// unfinished indexes the operations the engine has yet to finish.
	unfinished *unfinishedIndex
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.KeepHistory <= 0 {
		cfg.KeepHistory = DefaultKeepHistory
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Service{cfg: cfg, d: cfg.Storage, unfinished: &unfinishedIndex{d: cfg.Storage}}
}

// kick tells the engine that op was queued.
func (s *Service) kick(op *operation.Operation) {
	if op != nil {
		s.cfg.Wakeup.Signal()
	}
}
