package incus

import (
	"io"
)

// The REST types below copy the official shared/api names and JSON tags,
// trimmed to the fields uplink uses.

// StatusCode is the numeric status of an operation or instance.
type StatusCode int

// The status codes uplink looks at; the API defines more.
const (
	Running   StatusCode = 103
	Success   StatusCode = 200
	Failure   StatusCode = 400
	Cancelled StatusCode = 401
)

// IsFinal reports whether an operation with this status has ended.
func (s StatusCode) IsFinal() bool { return s >= Success }

// Server is GET /1.0.
type Server struct {
	APIExtensions []string          `json:"api_extensions"`
	Auth          string            `json:"auth"` // "trusted" or "untrusted"
	Environment   ServerEnvironment `json:"environment"`
}

// ServerEnvironment describes the daemon.
type ServerEnvironment struct {
	Server string `json:"server"` // "incus" or "lxd"
}

// OperationInfo is a background operation as the server reports it (the
// official api.Operation; Operation is the handle to wait on).
type OperationInfo struct {
	ID         string         `json:"id"`
	Status     string         `json:"status"`
	StatusCode StatusCode     `json:"status_code"`
	Metadata   map[string]any `json:"metadata"` // an exec's exit code and output files
	Err        string         `json:"err"`
}

// InstanceType is "container" or "virtual-machine"; empty means any.
type InstanceType string

const (
	InstanceTypeAny       InstanceType = ""
	InstanceTypeContainer InstanceType = "container"
)

// InstancePut is the writable part of an instance. Empty fields are left
// out so that PatchInstance sends only what is set; for a PUT, a missing
// field and an empty one mean the same.
type InstancePut struct {
	Architecture string                       `json:"architecture,omitempty"`
	Config       map[string]string            `json:"config,omitempty"`
	Devices      map[string]map[string]string `json:"devices,omitempty"`
	Profiles     []string                     `json:"profiles,omitempty"`
}

// Instance is GET /1.0/instances/<name>.
type Instance struct {
	InstancePut
	Name       string       `json:"name"`
	Type       InstanceType `json:"type"`
	Status     string       `json:"status"`
	StatusCode StatusCode   `json:"status_code"`
	Project    string       `json:"project"`
}

// InstanceSource says what to build an instance's root from.
type InstanceSource struct {
	Type        string `json:"type"` // "image" or "none"
	Alias       string `json:"alias,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Server      string `json:"server,omitempty"`
	Protocol    string `json:"protocol,omitempty"` // "simplestreams" or "incus"/"lxd"
	Mode        string `json:"mode,omitempty"`     // "pull" for a remote image
}

// InstancesPost is the body of POST /1.0/instances.
type InstancesPost struct {
	InstancePut
	Name   string         `json:"name"`
	Type   InstanceType   `json:"type,omitempty"`
	Source InstanceSource `json:"source"`
}

// InstanceStatePut is the body of PUT /1.0/instances/<name>/state.
type InstanceStatePut struct {
	Action string `json:"action"` // start, stop, restart, freeze, unfreeze
	// Timeout in seconds for a clean shutdown; 0 stops at once, -1 waits
	// forever.
	Timeout  int  `json:"timeout"`
	Force    bool `json:"force"`
	Stateful bool `json:"stateful"`
}

// InstanceExecPost is the body of POST /1.0/instances/<name>/exec.
type InstanceExecPost struct {
	Command      []string          `json:"command"`
	Environment  map[string]string `json:"environment,omitempty"`
	WaitForWS    bool              `json:"wait-for-websocket"`
	Interactive  bool              `json:"interactive"`
	RecordOutput bool              `json:"record-output"`
	User         uint32            `json:"user"`
	Group        uint32            `json:"group"`
	Cwd          string            `json:"cwd,omitempty"`
}

// InstanceExecArgs receives the recorded output of ExecInstance.
type InstanceExecArgs struct {
	Stdout io.Writer
	Stderr io.Writer
}

// InstanceFileArgs describes a file to create in an instance.
type InstanceFileArgs struct {
	Content io.Reader // file content, or the target of a symlink
	UID     int64     // owner; negative leaves the server default
	GID     int64
	// Mode is the permission bits, e.g. 0o644; 0 leaves the server
	// default (0644 for files, 0755 for directories).
	Mode      int
	Type      string // "file" (default), "directory" or "symlink"
	WriteMode string // "overwrite" (default) or "append"
}

// InstanceFileResponse describes a file read from an instance.
type InstanceFileResponse struct {
	UID     int64
	GID     int64
	Mode    int
	Type    string
	Entries []string // the names in a directory
}

// Network is GET /1.0/networks/<name>.
type Network struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Managed bool   `json:"managed"`
}

// NetworkLease is a DHCP lease (or static allocation) of a managed network.
type NetworkLease struct {
	Hostname string `json:"hostname"`
	Hwaddr   string `json:"hwaddr"`
	Address  string `json:"address"`
	Type     string `json:"type"`    // static or dynamic
	Project  string `json:"project"` // Incus only
}
