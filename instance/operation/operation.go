// Package operation records and runs the changes made to an installation's
// instances: one at a time per installation, across every replica, each a
// durable record of named steps, progress, a log and an outcome.
package operation

import (
	"time"
)

// Kind is what an operation does.
type Kind string

// The kinds of API.md.
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

// Finished reports whether the step needs no more work.
func (s StepState) Finished() bool { return s == StepDone || s == StepSkipped }

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

// Endpoint is one side of an operation: the channel of the installation
// (a branch, or a commit with the tag it came from) and the commit it
// resolved to when the operation was created.
type Endpoint struct {
	Branch   string `json:"branch,omitempty"`
	Commit   string `json:"commit,omitempty"`
	Tag      string `json:"tag,omitempty"`
	Resolved string `json:"resolved_commit,omitempty"`
}

// Lease says which replica runs an operation, until when. Token grows
// with every takeover: a replica writes only while the token it holds is
// still the recorded one, so one that lost its lease cannot write.
type Lease struct {
	Holder  string    `json:"holder"`
	Token   int64     `json:"token"`
	Expires time.Time `json:"expires"`
}

// Operation is one recorded change to an installation's instances.
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
	Lease        *Lease     `json:"lease,omitempty"`
	// Attempts counts the replicas that took the operation on.
	Attempts int `json:"attempts"`
}

// MaxLogLines bounds an operation's log; past it the middle is dropped
// (the start says what began, the end why it ended).
const MaxLogLines = 2000

// AddLog appends lines, keeping the log bounded.
func (op *Operation) AddLog(at time.Time, lines ...string) {
	for _, l := range lines {
		op.Log = append(op.Log, LogLine{At: at, Line: l})
	}
	if n := len(op.Log); n > MaxLogLines {
		keep := MaxLogLines / 2
		cut := n - MaxLogLines + 1
		op.Log = append(append(op.Log[:keep:keep], LogLine{At: at, Line: "[... log lines dropped ...]"}), op.Log[keep+cut:]...)
	}
}

// Recount recomputes progress from the steps.
func (op *Operation) Recount() {
	op.Progress = Progress{Total: len(op.Steps)}
	for _, s := range op.Steps {
		if s.State.Finished() || s.State == StepFailed {
			op.Progress.Done++
		}
	}
}
