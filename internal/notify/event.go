package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/instance/operation"
)

// Event types, the X-Uplink-Event header of each delivery.
const (
	TypePublish           = "publish"
	TypeOperationStarted  = "operation.started"
	TypeOperationFinished = "operation.finished"
)

// Event is the JSON body of one delivery. Its ID is the same whenever the
// same thing is told again (a retry, a publish completed after a crash),
// so a receiver de-duplicates on it.
type Event struct {
	ID        string     `json:"id"`
	Type      string     `json:"type"`
	At        time.Time  `json:"at"`
	Publish   *Publish   `json:"publish,omitempty"`
	Operation *Operation `json:"operation,omitempty"`
}

// Publish is what a publish event tells: the build and the refs it moved.
type Publish struct {
	App     string   `json:"app"`
	Commit  string   `json:"commit"`
	Branch  string   `json:"branch,omitempty"`
	Tags    []string `json:"tags"`
	Archs   []string `json:"archs"`
	Message string   `json:"message,omitempty"`
	Author  string   `json:"author,omitempty"`
	// Recovered: completed by a replica's sweep after its request failed.
	Recovered bool `json:"recovered,omitempty"`
}

// Operation is what an operation event tells; Result and Error only once
// it finished.
type Operation struct {
	ID           string    `json:"id"`
	Kind         string    `json:"kind"`
	Installation string    `json:"installation"`
	From         *Endpoint `json:"from"`
	To           *Endpoint `json:"to"`
	Commit       string    `json:"commit"`
	Result       string    `json:"result,omitempty"`
	Error        string    `json:"error,omitempty"`
}

// Endpoint is a side of an operation in the API's channel form: a branch,
// or a commit with the tag it came from, and the commit it resolved to.
type Endpoint struct {
	Branch   string `json:"branch,omitempty"`
	Commit   string `json:"commit,omitempty"`
	Tag      string `json:"tag,omitempty"`
	Resolved string `json:"resolved_commit,omitempty"`
}

// PublishEvent is the event of a completed publish.
func PublishEvent(p ref.Published) Event {
	req := p.Request
	tags := req.Tags
	if tags == nil {
		tags = []string{}
	}
	at := p.Build.PublishedAt.UTC()
	return Event{
		ID:   eventID(TypePublish, p.App.String(), p.Build.Commit, req.Branch, strings.Join(tags, ","), at.Format(time.RFC3339Nano)),
		Type: TypePublish, At: at,
		Publish: &Publish{App: p.App.String(), Commit: p.Build.Commit, Branch: req.Branch, Tags: tags, Archs: p.Build.Archs,
			Message: req.Message, Author: req.Author, Recovered: p.Recovered},
	}
}

// OperationEvent is the event of op starting (started) or ending.
func OperationEvent(op *operation.Operation, started bool) Event {
	typ, at := TypeOperationFinished, op.FinishedAt
	if started {
		typ, at = TypeOperationStarted, op.StartedAt
	}
	if at == nil {
		now := time.Now().UTC()
		at = &now
	}
	o := &Operation{ID: op.ID, Kind: string(op.Kind), Installation: op.Installation, From: endpoint(op.From), To: endpoint(op.To),
		Commit: op.Commit}
	if !started {
		o.Result, o.Error = string(op.State), op.Error
	}
	return Event{ID: eventID(typ, op.ID), Type: typ, At: at.UTC(), Operation: o}
}

func endpoint(e *operation.Endpoint) *Endpoint {
	if e == nil {
		return nil
	}
	return &Endpoint{Branch: e.Branch, Commit: e.Commit, Tag: e.Tag, Resolved: e.Resolved}
}

// eventID names an event by what it tells, not when it was raised.
func eventID(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:16])
}

// SignatureHeader carries Sign's value when a secret is configured.
const SignatureHeader = "X-Uplink-Signature"

// Sign is the X-Uplink-Signature of body under secret:
// "sha256=" and the hex HMAC-SHA256 of the exact body bytes.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether signature is Sign(secret, body), in constant
// time: what a receiver written in Go does.
func Verify(secret, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(signature))
}
