package api

import "time"

// Instances says how an installation's instances are made.
type Instances struct {
	Count    int      `json:"count"`
	Image    string   `json:"image"`
	Profiles []string `json:"profiles"`
	Project  string   `json:"project"`
}

// Spec is what an operator declares (PUT /api/v1/installations/<name>).
// In an Installation, Channel is what the instances run.
type Spec struct {
	App           string    `json:"app"`
	Package       string    `json:"package"`
	Channel       Channel   `json:"channel,omitzero"`
	Instances     Instances `json:"instances"`
	PublicKey     string    `json:"public_key"`
	KeyName       string    `json:"key_name"`
	HealthCommand []string  `json:"health_command,omitempty"`
}

// Instance is an instance as the instance backend observed it.
type Instance struct {
	Name   string `json:"name"`
	Commit string `json:"commit"`
	State  string `json:"state"`
	// Version is the package version installed in the instance, Arch
	// its apk architecture.
	Version string `json:"version,omitempty"`
	Arch    string `json:"arch,omitempty"`
}

// Attempt is a change that has not succeeded (yet): the one running, or
// the last one that failed.
type Attempt struct {
	Channel   Channel `json:"channel"`
	Commit    string  `json:"commit"`
	Operation string  `json:"operation"`
	Error     string  `json:"error,omitempty"`
}

// Installation is an installation: its spec and what its instances run.
type Installation struct {
	Name string `json:"name"`
	Spec
	ResolvedCommit string     `json:"resolved_commit"`
	RepositoryURL  string     `json:"repository_url"`
	Observed       []Instance `json:"observed_instances"`
	LastOperation  *Operation `json:"last_operation"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
	// Pending is the change that runs now; LastAttempt the one that
	// failed since the last success.
	Pending     *Attempt `json:"pending,omitempty"`
	LastAttempt *Attempt `json:"last_attempt,omitempty"`
}

// Installations is the answer of GET /api/v1/installations.
type Installations struct {
	Installations []Installation `json:"installations"`
}

// HistoryEntry is one channel change.
type HistoryEntry struct {
	From      *Channel  `json:"from"`
	To        Channel   `json:"to"`
	Commit    string    `json:"commit"`
	At        time.Time `json:"at"`
	Operation string    `json:"operation"`
	Result    State     `json:"result"`
}

// History is the answer of GET .../history, newest first.
type History struct {
	History []HistoryEntry `json:"history"`
}
