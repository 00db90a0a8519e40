package incus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

func instancePath(name string) string { return "/1.0/instances/" + url.PathEscape(name) }

// GetInstancesWithFilter lists the instances matching all filters.
// "key=value" becomes "key eq value", as in the official client (config
// keys by their dotted name, e.g. "config.user.uplink.pin=main"); other
// entries are taken as clauses already, e.g. "status ne Stopped".
func (c *ProtocolIncus) GetInstancesWithFilter(ctx context.Context, t InstanceType, filters []string) ([]Instance, error) {
	if err := c.checkExtension("api_filtering"); err != nil {
		return nil, err
	}
	return c.getInstances(ctx, t, parseFilters(filters))
}

func (c *ProtocolIncus) getInstances(ctx context.Context, t InstanceType, filter string) ([]Instance, error) {
	q := url.Values{"recursion": {"1"}}
	if t != InstanceTypeAny {
		q.Set("instance-type", string(t))
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	var list []Instance
	_, err := c.queryStruct(ctx, http.MethodGet, "/1.0/instances", q, nil, "", &list)
	return list, err
}

func parseFilters(filters []string) string {
	clauses := make([]string, 0, len(filters))
	for _, f := range filters {
		k, v, ok := strings.Cut(f, "=")
		if !ok || strings.ContainsAny(k, " \t") {
			clauses = append(clauses, f)
			continue
		}
		// The server splits the filter on spaces and rejoins quoted words.
		if strings.ContainsAny(v, " \t") {
			v = `"` + v + `"`
		}
		clauses = append(clauses, k+" eq "+v)
	}
	return strings.Join(clauses, " and ")
}

// GetInstance returns an instance and its ETag.
func (c *ProtocolIncus) GetInstance(ctx context.Context, name string) (*Instance, string, error) {
	var inst Instance
	etag, err := c.queryStruct(ctx, http.MethodGet, instancePath(name), nil, nil, "", &inst)
	if err != nil {
		return nil, "", err
	}
	return &inst, etag, nil
}

// CreateInstance creates a stopped instance.
func (c *ProtocolIncus) CreateInstance(ctx context.Context, req InstancesPost) (Operation, error) {
	return asOperation(c.queryOperation(ctx, http.MethodPost, "/1.0/instances", nil, req, ""))
}

// PatchInstance changes only the fields set in patch (PATCH); config keys
// are merged one by one, so it suits the user.* labels.
func (c *ProtocolIncus) PatchInstance(ctx context.Context, name string, patch InstancePut, etag string) error {
	op, err := c.queryOperation(ctx, http.MethodPatch, instancePath(name), nil, patch, etag)
	if err != nil {
		return err
	}
	return op.WaitContext(ctx) // sync on the daemons seen, but cheap to be sure
}

// alreadyStopped is the failure of stopping a stopped instance.
const alreadyStopped = "already stopped"

// UpdateInstanceState starts, stops, restarts, freezes or unfreezes an
// instance. Stopping an instance that is already stopped succeeds.
func (c *ProtocolIncus) UpdateInstanceState(ctx context.Context, name string, state InstanceStatePut, etag string) (Operation, error) {
	op, err := c.queryOperation(ctx, http.MethodPut, instancePath(name)+"/state", nil, state, etag)
	if state.Action != "stop" {
		return asOperation(op, err)
	}
	if err != nil {
		if strings.Contains(err.Error(), alreadyStopped) {
			return doneOperation(c), nil
		}
		return nil, err
	}
	op.okErr = alreadyStopped
	return op, nil
}

// DeleteInstance deletes a stopped instance.
func (c *ProtocolIncus) DeleteInstance(ctx context.Context, name string) (Operation, error) {
	return asOperation(c.queryOperation(ctx, http.MethodDelete, instancePath(name), nil, nil, ""))
}

// ExecInstance runs a command in a running instance, waits for it and
// returns its exit code. A non-zero exit is not an error; a command the
// instance cannot run fails the operation (exit code 126 or 127, returned
// with the error). With args.Stdout or args.Stderr set, the output is
// recorded (record-output), copied to them and deleted on the server.
// Interactive and websocket execs are not supported.
func (c *ProtocolIncus) ExecInstance(ctx context.Context, name string, exec InstanceExecPost, args *InstanceExecArgs) (int, error) {
	if exec.WaitForWS || exec.Interactive {
		return -1, errors.New("incus: exec over websockets is not supported")
	}
	if args == nil {
		args = &InstanceExecArgs{}
	}
	if args.Stdout != nil || args.Stderr != nil {
		exec.RecordOutput = true
	}
	op, err := c.queryOperation(ctx, http.MethodPost, instancePath(name)+"/exec", nil, exec, "")
	if err != nil {
		return -1, err
	}
	waitErr := op.WaitContext(ctx)

	var md struct {
		Return *int              `json:"return"`
		Output map[string]string `json:"output"`
	}
	if b, err := json.Marshal(op.Get().Metadata); err == nil {
		_ = json.Unmarshal(b, &md)
	}
	code := -1
	if md.Return != nil {
		code = *md.Return
	}
	if waitErr != nil && ctx.Err() != nil {
		return code, waitErr
	}
	// Collect even after a failure: the files exist and would linger.
	outErr := errors.Join(
		c.execOutput(ctx, md.Output["1"], args.Stdout),
		c.execOutput(ctx, md.Output["2"], args.Stderr),
	)
	if waitErr != nil {
		return code, waitErr
	}
	if md.Return == nil {
		return code, errors.Join(fmt.Errorf("incus: exec in %s: no exit code", name), outErr)
	}
	return code, outErr
}

// execOutput copies a recorded output file to w and deletes it. The path
// is used exactly as the server gave it: Incus and LXD differ
// (/logs/exec-output/<f> vs /logs/<f>) and reject each other's form.
// It carries no project, so the client's is added.
func (c *ProtocolIncus) execOutput(ctx context.Context, p string, w io.Writer) error {
	if p == "" {
		return nil
	}
	var copyErr error
	if w != nil {
		resp, err := c.do(ctx, http.MethodGet, c.url(p, nil), nil, "", nil)
		if err != nil {
			copyErr = fmt.Errorf("incus: read exec output: %w", err)
		} else {
			_, copyErr = io.Copy(w, resp.Body)
			resp.Body.Close()
		}
	}
	_, _, err := c.query(ctx, http.MethodDelete, p, nil, nil, "")
	if err != nil {
		err = fmt.Errorf("incus: delete exec output: %w", err)
	}
	return errors.Join(copyErr, err)
}

func filesQuery(p string) url.Values { return url.Values{"path": {p}} }

// CreateInstanceFile writes a file, directory or symlink in an instance.
func (c *ProtocolIncus) CreateInstanceFile(ctx context.Context, name, filePath string, args InstanceFileArgs) error {
	h := http.Header{}
	// Incus reads X-Incus-* (6.0 also X-LXD-*), LXD only X-LXD-*: send both.
	set := func(k, v string) {
		h.Set("X-Incus-"+k, v)
		h.Set("X-LXD-"+k, v)
	}
	if args.UID >= 0 {
		set("uid", strconv.FormatInt(args.UID, 10))
	}
	if args.GID >= 0 {
		set("gid", strconv.FormatInt(args.GID, 10))
	}
	if args.Mode > 0 {
		// Octal with a leading 0: the server reads "644" as decimal.
		set("mode", fmt.Sprintf("%04o", args.Mode))
	}
	if args.Type != "" {
		set("type", args.Type)
	}
	if args.WriteMode != "" {
		set("write", args.WriteMode)
	}
	// Always a reader, so the body goes as octet-stream: a form-encoded
	// body is parsed as a form and the file created empty.
	var body io.Reader = strings.NewReader("")
	if args.Content != nil {
		body = args.Content
	}
	resp, err := c.do(ctx, http.MethodPost, c.url(instancePath(name)+"/files", filesQuery(filePath)), body, "", h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = parseResponse(resp)
	return err
}

// GetInstanceFile reads a file of an instance. For a directory the reader
// is nil and the response lists the entries. The caller closes the reader.
// Owner and mode the server did not send are -1.
func (c *ProtocolIncus) GetInstanceFile(ctx context.Context, name, filePath string) (io.ReadCloser, *InstanceFileResponse, error) {
	resp, err := c.do(ctx, http.MethodGet, c.url(instancePath(name)+"/files", filesQuery(filePath)), nil, "", nil)
	if err != nil {
		return nil, nil, err
	}
	fr := &InstanceFileResponse{
		UID:  fileHeaderInt(resp.Header, "uid", 10),
		GID:  fileHeaderInt(resp.Header, "gid", 10),
		Mode: int(fileHeaderInt(resp.Header, "mode", 8)),
		Type: fileHeader(resp.Header, "type"),
	}
	if fr.Type != "directory" {
		return resp.Body, fr, nil
	}
	defer resp.Body.Close()
	r, err := parseResponse(resp)
	if err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(r.Metadata, &fr.Entries); err != nil {
		return nil, nil, fmt.Errorf("incus: decode directory %s: %w", filePath, err)
	}
	return nil, fr, nil
}

// fileHeader reads a file header under either prefix.
func fileHeader(h http.Header, key string) string {
	if v := h.Get("X-Incus-" + key); v != "" {
		return v
	}
	return h.Get("X-LXD-" + key)
}

func fileHeaderInt(h http.Header, key string, base int) int64 {
	n, err := strconv.ParseInt(fileHeader(h, key), base, 64)
	if err != nil {
		return -1
	}
	return n
}
