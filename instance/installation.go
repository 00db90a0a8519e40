// Package instance owns installations: deployed copies of an app with
// a channel (the ref their instances install from), their history of
// channel changes and their operations, all kept durably in storage.
package instance

import (
	"encoding/json"
	"time"

	"github.com/uplinkhq/uplink/instance/operation"
)

// Channel is what an installation installs from: a branch it tracks, or
// a commit it is pinned to (Tag records the tag a pin came from).
type Channel struct {
	Branch string `json:"branch,omitempty"`
	Commit string `json:"commit,omitempty"`
	Tag    string `json:"tag,omitempty"`
}

// Ref is the ref instances put in their repository URL: the commit when
// pinned, else the branch.
func (c Channel) Ref() string {
	if c.Commit != "" {
		return c.Commit
	}
	return c.Branch
}

// IsZero reports an unset channel.
func (c Channel) IsZero() bool { return c == Channel{} }

func (c Channel) String() string {
	switch {
	case c.Commit != "" && c.Tag != "":
		return "commit " + c.Commit + " (tag " + c.Tag + ")"
	case c.Commit != "":
		return "commit " + c.Commit
	case c.Branch != "":
		return "branch " + c.Branch
	}
	return "none"
}

// at is c as an operation records it, resolved to commit.
func (c Channel) at(commit string) *operation.Endpoint {
	return &operation.Endpoint{Branch: c.Branch, Commit: c.Commit, Tag: c.Tag, Resolved: commit}
}

// ChannelOf is the channel an operation's endpoint names.
func ChannelOf(e operation.Endpoint) Channel {
	return Channel{Branch: e.Branch, Commit: e.Commit, Tag: e.Tag}
}

// Instances says how an installation's instances are made.
type Instances struct {
	Count    int      `json:"count"`
	Image    string   `json:"image"`
	Profiles []string `json:"profiles"`
	Project  string   `json:"project"`
}

// Spec is what an operator declares. In a record and a view, Channel is
// what the instances run: it moves when a change-channel operation
// succeeds, and is unset until the first one did.
type Spec struct {
	App           string    `json:"app"`
	Package       string    `json:"package"`
	Channel       Channel   `json:"channel,omitzero"`
	Instances     Instances `json:"instances"`
	PublicKey     string    `json:"public_key"`
	KeyName       string    `json:"key_name"`
	HealthCommand []string  `json:"health_command,omitempty"`
}

// HistoryEntry is one channel change.
type HistoryEntry struct {
	From      *Channel        `json:"from"`
	To        Channel         `json:"to"`
	Commit    string          `json:"commit"`
	At        time.Time       `json:"at"`
	Operation string          `json:"operation"`
	Result    operation.State `json:"result"`
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
	// Commit is the commit the instances run: the target of the newest
	// succeeded change-channel or upgrade.
	Commit string `json:"commit,omitempty"`
	// LastAttempt is the change that failed since the last success.
	LastAttempt *Attempt `json:"last_attempt,omitempty"`
	// PendingUpgrades holds, by branch, a commit published while an
	// operation ran, to the branch the instances track or the one a
	// running change moves them to (so at most two). When the operation
	// ends, the one for the branch they then track is applied; the rest
	// are dropped.
	PendingUpgrades map[string]string `json:"pending_upgrades,omitempty"`
	// DeletedAt marks a deleted installation, kept so its operations
	// stay readable.
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
}

// Attempt is a change of an installation's instances that has not
// succeeded (yet): the one running, or the last one that failed.
type Attempt struct {
	Channel   Channel `json:"channel"`
	Commit    string  `json:"commit"`
	Operation string  `json:"operation"`
	Error     string  `json:"error,omitempty"`
}

// Instance is an instance as observed by the instance backend.
type Instance struct {
	Name   string `json:"name"`
	Commit string `json:"commit"`
	State  string `json:"state"`
	// Version is the package version installed in the instance (its
	// /lib/apk/db/installed), Arch its apk architecture.
	Version string `json:"version,omitempty"`
	Arch    string `json:"arch,omitempty"`
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
	// Pending is the change that runs now; LastAttempt the one that
	// failed since the last success.
	Pending     *Attempt `json:"pending,omitempty"`
	LastAttempt *Attempt `json:"last_attempt,omitempty"`
}

// UnmarshalJSON reads a record, also as uplink wrote it before
// PendingUpgrades: its one held publish, to the branch the record then
// named, is kept rather than lost across the upgrade.
func (r *Record) UnmarshalJSON(b []byte) error {
	type plain Record
	var v struct {
		plain
		PendingUpgrade string `json:"pending_upgrade"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Record(v.plain)
	if branch := r.Spec.Channel.Branch; v.PendingUpgrade != "" && branch != "" && r.PendingUpgrades[branch] == "" {
		if r.PendingUpgrades == nil {
			r.PendingUpgrades = map[string]string{}
		}
		r.PendingUpgrades[branch] = v.PendingUpgrade
	}
	return nil
}
