package incus

import (
	"io"
	"time"
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
	APIStatus     string            `json:"api_status"`
	APIVersion    string            `json:"api_version"`
	Auth          string            `json:"auth"` // "trusted" or "untrusted"
	AuthMethods   []string          `json:"auth_methods"`
	Environment   ServerEnvironment `json:"environment"`
}

// ServerEnvironment describes the daemon and its host.
type ServerEnvironment struct {
	Addresses              []string `json:"addresses"`
	Certificate            string   `json:"certificate"`
	CertificateFingerprint string   `json:"certificate_fingerprint"`
	Driver                 string   `json:"driver"`
	Project                string   `json:"project"`
	Server                 string   `json:"server"` // "incus" or "lxd"
	ServerClustered        bool     `json:"server_clustered"`
	ServerName             string   `json:"server_name"`
	ServerVersion          string   `json:"server_version"`
	Storage                string   `json:"storage"`
}

// OperationInfo is a background operation as the server reports it (the
// official api.Operation; Operation is the handle to wait on).
type OperationInfo struct {
	ID          string              `json:"id"`
	Class       string              `json:"class"`
	Description string              `json:"description"`
	CreatedAt   time.Time           `json:"created_at"`
	UpdatedAt   time.Time           `json:"updated_at"`
	Status      string              `json:"status"`
	StatusCode  StatusCode          `json:"status_code"`
	Resources   map[string][]string `json:"resources"`
	Metadata    map[string]any      `json:"metadata"`
	MayCancel   bool                `json:"may_cancel"`
	Err         string              `json:"err"`
	Location    string              `json:"location"`
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
	Ephemeral    bool                         `json:"ephemeral,omitempty"`
	Profiles     []string                     `json:"profiles,omitempty"`
	Stateful     bool                         `json:"stateful,omitempty"`
	Description  string                       `json:"description,omitempty"`
}

// Instance is GET /1.0/instances/<name>.
type Instance struct {
	InstancePut
	Name            string                       `json:"name"`
	Type            InstanceType                 `json:"type"`
	Status          string                       `json:"status"`
	StatusCode      StatusCode                   `json:"status_code"`
	CreatedAt       time.Time                    `json:"created_at"`
	LastUsedAt      time.Time                    `json:"last_used_at"`
	Location        string                       `json:"location"`
	Project         string                       `json:"project"`
	ExpandedConfig  map[string]string            `json:"expanded_config"`
	ExpandedDevices map[string]map[string]string `json:"expanded_devices"`
}

// InstanceSource says what to build an instance's root from.
type InstanceSource struct {
	Type        string `json:"type"` // "image" or "none"
	Alias       string `json:"alias,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Server      string `json:"server,omitempty"`
	Protocol    string `json:"protocol,omitempty"` // "simplestreams" or "incus"/"lxd"
	Mode        string `json:"mode,omitempty"`     // "pull" for a remote image
	Secret      string `json:"secret,omitempty"`
	Certificate string `json:"certificate,omitempty"`
	Project     string `json:"project,omitempty"`
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
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Type        string            `json:"type"`
	Managed     bool              `json:"managed"`
	Status      string            `json:"status"`
	Config      map[string]string `json:"config"`
	UsedBy      []string          `json:"used_by"`
	Locations   []string          `json:"locations"`
	Project     string            `json:"project"`
}

// NetworkLease is a DHCP lease (or static allocation) of a managed network.
type NetworkLease struct {
	Hostname string `json:"hostname"`
	Hwaddr   string `json:"hwaddr"`
	Address  string `json:"address"`
	Type     string `json:"type"` // static or dynamic
	Location string `json:"location"`
	Project  string `json:"project"` // Incus only
}
