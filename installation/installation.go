// Package installation owns installations: deployed copies of an app with
// a channel (the ref their instances install from), their history of
// channel changes and their operations, all kept durably in storage.
package installation

import (
	"time"

	"github.com/uplinkhq/uplink/operation"
)

// Instances says how an installation's instances are made.
type Instances struct {
	Count    int      `json:"count"`
	Image    string   `json:"image"`
	Profiles []string `json:"profiles"`
	Project  string   `json:"project"`
}

// Spec is what an operator declares.
type Spec struct {
	App           string            `json:"app"`
	Package       string            `json:"package"`
	Channel       operation.Channel `json:"channel"`
	Instances     Instances         `json:"instances"`
	PublicKey     string            `json:"public_key"`
	KeyName       string            `json:"key_name"`
	HealthCommand []string          `json:"health_command,omitempty"`
}

// HistoryEntry is one channel change.
type HistoryEntry struct {
	From      *operation.Channel `json:"from"`
	To        operation.Channel  `json:"to"`
	Commit    string             `json:"commit"`
	At        time.Time          `json:"at"`
	Operation string             `json:"operation"`
	Result    operation.State    `json:"result"`
}

// Record is the one stored object of an installation. The spec, the
// channel, the history and the recent operations live together, so one
// compare-and-swap records a channel change, the operation that carries
// it out and its history entry: no crash can leave one without another.
type Record struct {
	Name      string    `json:"name"`
	Spec      Spec      `json:"spec"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// History is newest first.
	History []HistoryEntry `json:"history"`
	// Operations holds the active operation and the most recent ones,
	// newest first; older ones are archived to their own objects.
	Operations []*operation.Operation `json:"operations"`
	// Seq numbers the operations: their ids are "<name>.<seq>".
	Seq int64 `json:"seq"`
	// PendingUpgrade is a commit published to the tracked branch while
	// another operation ran; an upgrade to it follows.
	PendingUpgrade string `json:"pending_upgrade,omitempty"`
	// DeletedAt marks a deleted installation, kept so its operations
	// stay readable.
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
}

// Instance is an instance as observed by the instance backend.
type Instance struct {
	Name   string `json:"name"`
	Commit string `json:"commit"`
	State  string `json:"state"`
}

// View is what the API shows of an installation.
type View struct {
	Name string `json:"name"`
	Spec
	ResolvedCommit string               `json:"resolved_commit"`
	RepositoryURL  string               `json:"repository_url"`
	Observed       []Instance           `json:"observed_instances"`
	LastOperation  *operation.Operation `json:"last_operation"`
	CreatedAt      time.Time            `json:"created_at"`
	UpdatedAt      time.Time            `json:"updated_at"`
}
