// Package api is the wire format of the admin API (docs/api.md): the JSON
// bodies the server writes and the client reads. It holds types only. The
// server converts its domain values into these, so what is stored only to
// run the service (an operation's lease, fencing token and attempt count)
// never reaches a client, and the client depends on no domain package.
package api

// Error is the body of every error answer: {"error": Error}.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Operation names the running operation of a 409 operation_running.
	Operation string `json:"operation,omitempty"`
	// Problems says why a publish was refused (422), at most 100.
	Problems []Problem `json:"problems,omitempty"`
	// Omitted counts the problems beyond those listed.
	Omitted int `json:"omitted,omitempty"`
	// UsedBy names what still uses the branch, tag or build a 409
	// in_use refused to delete ("installation web", "tag v1", ...).
	UsedBy []string `json:"used_by,omitempty"`
}

// ErrorBody wraps an Error as the API sends it.
type ErrorBody struct {
	Error Error `json:"error"`
}

// The error codes of docs/api.md a client may act on.
const (
	CodeOperationRunning = "operation_running"
	CodeNotFound         = "not_found"
	CodeInvalid          = "invalid"
	CodeUnavailable      = "unavailable"
)

// Problem is one reason a publish was refused: the index of Arch, the file
// below the commit, and what is wrong with it.
type Problem struct {
	Arch    string `json:"arch"`
	File    string `json:"file"`
	Kind    string `json:"kind"`
	Problem string `json:"problem"`
}
