package api

import "time"

// Kind is what an operation does.
type Kind string

// The kinds of operation.
const (
	KindChangeChannel Kind = "change-channel"
	KindUpgrade       Kind = "upgrade"
	KindDelete        Kind = "delete"
)

// State is where an operation is.
type State string

// Operation states.
const (
	Queued    State = "queued"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
)

// Done reports whether s is final.
func (s State) Done() bool { return s == Succeeded || s == Failed }

// StepState is where one step is.
type StepState string

// Step states.
const (
	StepPending StepState = "pending"
	StepRunning StepState = "running"
	StepDone    StepState = "done"
	StepFailed  StepState = "failed"
	StepSkipped StepState = "skipped"
)

// Step is one named step of an operation.
type Step struct {
	Name       string     `json:"name"`
	State      StepState  `json:"state"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// Progress counts finished steps.
type Progress struct {
	Done  int `json:"done"`
	Total int `json:"total"`
}

// LogLine is one line of an operation's log.
type LogLine struct {
	At   time.Time `json:"at"`
	Line string    `json:"line"`
}

// Channel is what an installation installs from: a branch it tracks, or a
// commit it is pinned to (Tag names the tag a pin came from). As a request
// (PUT .../channel) it names exactly one of the three.
type Channel struct {
	Branch string `json:"branch,omitempty"`
	Commit string `json:"commit,omitempty"`
	Tag    string `json:"tag,omitempty"`
}

// IsZero reports an unset channel.
func (c Channel) IsZero() bool { return c == Channel{} }

// Endpoint is one side of an operation: a channel and the commit it
// resolved to when the operation was created.
type Endpoint struct {
	Channel
	Resolved string `json:"resolved_commit,omitempty"`
}

// Operation is one change to an installation's instances. Which replica
// runs it, under which lease, and how many took it on are not part of it:
// a takeover shows in its log.
type Operation struct {
	ID           string     `json:"id"`
	Kind         Kind       `json:"kind"`
	Installation string     `json:"installation"`
	State        State      `json:"state"`
	From         *Endpoint  `json:"from"`
	To           *Endpoint  `json:"to"`
	Commit       string     `json:"commit"`
	Steps        []Step     `json:"steps"`
	Progress     Progress   `json:"progress"`
	Log          []LogLine  `json:"log"`
	Error        string     `json:"error,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	StartedAt    *time.Time `json:"started_at,omitempty"`
	FinishedAt   *time.Time `json:"finished_at,omitempty"`
}

// Operations is the answer of GET /api/v1/operations, newest first.
type Operations struct {
	Operations []*Operation `json:"operations"`
}
