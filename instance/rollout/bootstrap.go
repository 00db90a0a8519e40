package rollout

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/instance/incus"
	ops "github.com/uplinkhq/uplink/instance/operation"
)

// The labels uplink puts on its instances (user.* config keys, which
// Incus lets us filter on). They say what each instance runs, so that a
// crashed operation leaves what is left to do written on the instances.
// Commit, ref and version are written only once the installed version
// was read back from the instance: a label never claims what was not
// checked (a new instance carries none until then).
const (
	LabelManaged      = "user.managed_by"
	LabelInstallation = "user.uplink.installation"
	LabelCommit       = "user.uplink.commit"
	LabelRef          = "user.uplink.ref"
	LabelVersion      = "user.uplink.version"
	LabelPackage      = "user.uplink.package" // whose version LabelVersion is
	LabelOperation    = "user.uplink.operation"
	managedBy         = "uplink"
)

// installedDB is apk's installed database, the same path in apk-tools 2
// and 3: the installed version is V: in the package's P: stanza
// (apk-protocol.md §7.7).
const installedDB = "/lib/apk/db/installed"

// BackendConfig wires a Backend.
type BackendConfig struct {
	Incus Projects
	// ImageServer, when set, is a simplestreams server images are pulled
	// from (e.g. https://images.linuxcontainers.org); otherwise the image
	// is a local alias or fingerprint.
	ImageServer string
	// ProxyConnect, when set (e.g. tcp:127.0.0.1:4080), adds a proxy
	// device to every instance so that the host and port of its
	// repository URL, on the instance's loopback, reach uplink there: for
	// an uplink on the same host as the instances, with no network path.
	ProxyConnect string
	// HealthTimeout bounds how long a health command may keep failing
	// after a restart before the instance counts as unhealthy.
	HealthTimeout time.Duration
}

// Backend carries operations out on Incus: it implements
// ops.Backend.
type Backend struct {
	cfg BackendConfig
}

// NewBackend returns a Backend.
func NewBackend(cfg BackendConfig) *Backend {
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 30 * time.Second
	}
	return &Backend{cfg: cfg}
}

// Steps implements ops.Backend: ops.InstanceSteps, which the backend
// of no instances records too.
func (b *Backend) Steps(op *ops.Operation, t ops.Target) []string { return ops.InstanceSteps(op, t) }

// newName is the name of the instance an operation creates for slot i:
// the same on every attempt, so a resumed operation finds its instance.
func newName(op *ops.Operation, i int) string {
	seq := op.ID[strings.LastIndexByte(op.ID, '.')+1:]
	return fmt.Sprintf("%s-%s-%d", op.Installation, seq, i)
}

// job is one step to run: i is the instance it acts on (from the step's
// name), inst the name of the instance the operation creates for i.
type job struct {
	c    Client
	op   *ops.Operation
	t    ops.Target
	i    int
	inst string
	log  func(string)
}

// stepFunc runs a step; onNew marks the steps that build the operation's
// new instance, which goes if one of them fails.
type stepFunc struct {
	run   func(b *Backend, ctx context.Context, j job) error
	onNew bool
}

// stepFuncs runs every step of ops.InstanceSteps, keyed by the names
// ops defines.
var stepFuncs = map[string]stepFunc{
	ops.StepCreateInstance:       {(*Backend).createInstance, true},
	ops.StepStartInstance:        {func(_ *Backend, ctx context.Context, j job) error { return setState(ctx, j.c, j.inst, "start") }, true},
	ops.StepConfigureRepository:  {(*Backend).configureRepository, true},
	ops.StepInstallPackage:       {func(b *Backend, ctx context.Context, j job) error { return b.install(ctx, j.c, j.inst, j.t, j.log) }, true},
	ops.StepRestartInstance:      {func(_ *Backend, ctx context.Context, j job) error { return setState(ctx, j.c, j.inst, "restart") }, true},
	ops.StepHealthCheck:          {(*Backend).healthCheck, true},
	ops.StepRemoveOldInstance:    {(*Backend).removeOldInstance, false},
	ops.StepRemoveExtraInstances: {(*Backend).removeExtraInstances, false},
	ops.StepUpgradeInstance:      {(*Backend).upgradeInstance, false},
	ops.StepDeleteInstances:      {(*Backend).deleteInstances, false},
}

// Do implements ops.Backend.
func (b *Backend) Do(ctx context.Context, name string, op *ops.Operation, t ops.Target, log func(string)) error {
	action, i := ops.SplitStep(name)
	s, ok := stepFuncs[action]
	if !ok {
		return fmt.Errorf("unknown step %q", name)
	}
	j := job{c: b.cfg.Incus(t.Project), op: op, t: t, i: i, inst: newName(op, i), log: log}
	err := s.run(b, ctx, j)
	if s.onNew && err != nil && !errors.Is(err, ops.ErrSkipped) && ctx.Err() == nil {
		// The new instance failed: it goes, the old ones stay as they are.
		log(fmt.Sprintf("%s failed: removing the new instance %s; the old instances are untouched", action, j.inst))
		if derr := remove(context.WithoutCancel(ctx), j.c, j.inst); derr != nil && !incus.IsNotFound(derr) {
			log("could not remove " + j.inst + ": " + derr.Error())
		}
	}
	return err
}

func (b *Backend) createInstance(ctx context.Context, j job) error {
	if _, _, err := j.c.GetInstance(ctx, j.inst); err == nil {
		j.log(j.inst + " exists already (resumed operation)")
		return nil
	} else if !incus.IsNotFound(err) {
		return err
	}
	t := j.t
	req := incus.InstancesPost{
		Name: j.inst, Type: incus.InstanceTypeContainer, Source: b.source(t.Image),
		InstancePut: incus.InstancePut{Profiles: t.Profiles, Config: map[string]string{
			LabelManaged: managedBy, LabelInstallation: t.Installation, LabelOperation: j.op.ID,
		}},
	}
	if dev, ok := b.proxyDevice(t.RepositoryURL); ok {
		req.Devices = map[string]map[string]string{"uplink-distribution": dev}
	}
	j.log(fmt.Sprintf("creating %s from image %s in project %s", j.inst, t.Image, t.Project))
	o, err := j.c.CreateInstance(ctx, req)
	if err != nil {
		return err
	}
	return o.WaitContext(ctx)
}

func (b *Backend) configureRepository(ctx context.Context, j job) error {
	t := j.t
	if err := j.c.CreateInstanceFile(ctx, j.inst, "/etc/apk/keys/"+t.KeyName, incus.InstanceFileArgs{
		Content: strings.NewReader(t.PublicKey), Mode: 0o644, Type: "file",
	}); err != nil {
		return fmt.Errorf("pushing the key: %w", err)
	}
	repos, err := readFile(ctx, j.c, j.inst, "/etc/apk/repositories")
	if err != nil {
		return err
	}
	updated := repositories(repos, t.App, t.RepositoryURL)
	if err := j.c.CreateInstanceFile(ctx, j.inst, "/etc/apk/repositories", incus.InstanceFileArgs{
		Content: strings.NewReader(updated), Mode: 0o644, Type: "file",
	}); err != nil {
		return fmt.Errorf("writing /etc/apk/repositories: %w", err)
	}
	j.log("/etc/apk/repositories: " + t.RepositoryURL)
	return nil
}

func (b *Backend) healthCheck(ctx context.Context, j job) error {
	if len(j.t.HealthCommand) == 0 {
		j.log("no health command")
		return ops.ErrSkipped
	}
	deadline := time.Now().Add(b.cfg.HealthTimeout)
	for {
		err := b.exec(ctx, j.c, j.inst, j.t.HealthCommand, j.log)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

func (b *Backend) removeOldInstance(ctx context.Context, j job) error {
	old, err := b.old(ctx, j.c, j.op, j.t)
	if err != nil {
		return err
	}
	if len(old) == 0 {
		j.log("no old instance left to remove")
		return ops.ErrSkipped
	}
	j.log("removing old instance " + old[0].Name + " (commit " + old[0].Config[LabelCommit] + ")")
	return remove(ctx, j.c, old[0].Name)
}

func (b *Backend) removeExtraInstances(ctx context.Context, j job) error {
	old, err := b.old(ctx, j.c, j.op, j.t)
	if err != nil {
		return err
	}
	if len(old) == 0 {
		return ops.ErrSkipped
	}
	for _, o := range old {
		j.log("removing instance " + o.Name + " beyond the installation's count")
		if err := remove(ctx, j.c, o.Name); err != nil {
			return err
		}
	}
	return nil
}

func (b *Backend) upgradeInstance(ctx context.Context, j job) error {
	insts, err := instances(ctx, j.c, j.t.Installation)
	if err != nil {
		return err
	}
	if j.i > len(insts) {
		j.log(fmt.Sprintf("no instance %d to upgrade (the installation has %d)", j.i, len(insts)))
		return ops.ErrSkipped
	}
	return b.install(ctx, j.c, insts[j.i-1].Name, j.t, j.log)
}

func (b *Backend) deleteInstances(ctx context.Context, j job) error {
	insts, err := instances(ctx, j.c, j.t.Installation)
	if err != nil {
		return err
	}
	for _, inst := range insts {
		j.log("removing instance " + inst.Name)
		if err := remove(ctx, j.c, inst.Name); err != nil {
			return err
		}
	}
	return nil
}

// source picks how Incus gets the image: pulled from a simplestreams
// server, or local by fingerprint or alias.
func (b *Backend) source(image string) incus.InstanceSource {
	if b.cfg.ImageServer != "" {
		return incus.InstanceSource{Type: "image", Mode: "pull", Protocol: "simplestreams", Server: b.cfg.ImageServer, Alias: image}
	}
	if len(image) >= 12 && artifact.IsHex(image) {
		return incus.InstanceSource{Type: "image", Fingerprint: image}
	}
	return incus.InstanceSource{Type: "image", Alias: image}
}

// proxyDevice maps the repository URL's port on the instance's loopback
// to uplink on the host.
func (b *Backend) proxyDevice(repoURL string) (map[string]string, bool) {
	if b.cfg.ProxyConnect == "" {
		return nil, false
	}
	port := "80"
	if rest, ok := strings.CutPrefix(repoURL, "http://"); ok {
		host, _, _ := strings.Cut(rest, "/")
		if i := strings.LastIndexByte(host, ':'); i >= 0 {
			port = host[i+1:]
		}
	}
	return map[string]string{"type": "proxy", "bind": "instance", "listen": "tcp:127.0.0.1:" + port, "connect": b.cfg.ProxyConnect}, true
}

// repositories rewrites an apk repositories file: the image's own lines
// stay, uplink's lines for app are replaced by url.
func repositories(current, app, url string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(current))
	for sc.Scan() {
		line := sc.Text()
		if distribution.IsRepositoryURL(line, app) {
			continue
		}
		out = append(out, line)
	}
	return strings.Join(append(out, url), "\n") + "\n"
}

// openFile opens a file of an instance; nil when there is none.
func openFile(ctx context.Context, c Client, inst, path string) (io.ReadCloser, error) {
	rc, _, err := c.GetInstanceFile(ctx, inst, path)
	if incus.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return rc, nil
}

// readFile reads a small file of an instance; "" when there is none.
func readFile(ctx context.Context, c Client, inst, path string) (string, error) {
	rc, err := openFile(ctx, c, inst, path)
	if rc == nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	return string(b), err
}

// exec runs a command, putting its output in the operation log; a
// non-zero exit is an error.
func (b *Backend) exec(ctx context.Context, c Client, inst string, cmd []string, log func(string)) error {
	log(inst + ": $ " + strings.Join(cmd, " ")) // which instance the output below is from
	var out bytes.Buffer
	code, err := c.ExecInstance(ctx, inst, incus.InstanceExecPost{Command: cmd, RecordOutput: true, Environment: map[string]string{"HOME": "/root"}},
		&incus.InstanceExecArgs{Stdout: &out, Stderr: &out})
	for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		if l != "" {
			log(l)
		}
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%q exited with status %d", strings.Join(cmd, " "), code)
	}
	return nil
}

// install puts exactly the version of t.Package that the target commit
// lists for the instance's arch in place, checks it, and only then labels
// the instance with the commit, ref and version. It serves a bootstrap
// and an in-place upgrade alike, and is safe to run again.
func (b *Backend) install(ctx context.Context, c Client, inst string, t ops.Target, log func(string)) error {
	arch, err := b.arch(ctx, c, inst, log)
	if err != nil {
		return err
	}
	version, ok := t.Version(arch)
	if !ok {
		return fmt.Errorf("the index of commit %s lists no %s for %s (it lists: %s)", t.Commit, t.Package, arch, listVersions(t.Versions))
	}
	if _, listed := t.Versions[arch]; !listed {
		log(fmt.Sprintf("%s: commit %s has no %s index; installing %s %s, the version all its indexes list", inst, t.Commit, arch, t.Package, version))
	}
	if err := b.refresh(ctx, c, inst, log); err != nil {
		return err
	}
	// "pkg=version" installs, upgrades and downgrades alike, where
	// add --upgrade never downgrades (apk-protocol.md §7.7).
	if err := b.exec(ctx, c, inst, []string{"apk", "add", t.Package + "=" + version}, log); err != nil {
		return err
	}
	got, err := installedVersion(ctx, c, inst, t.Package)
	if err != nil {
		return err
	}
	if got != version {
		has := t.Package + " " + got
		if got == "" {
			has = "no " + t.Package
		}
		return fmt.Errorf("%s: after apk add %s=%s, %s has %s, not %s as commit %s lists", inst, t.Package, version, installedDB, has, version, t.Commit)
	}
	log(fmt.Sprintf("%s: %s %s installed (read back from %s)", inst, t.Package, got, installedDB))
	return c.PatchInstance(ctx, inst, incus.InstancePut{Config: map[string]string{
		LabelCommit: t.Commit, LabelRef: t.Ref, LabelPackage: t.Package, LabelVersion: got,
	}}, "")
}

func listVersions(versions map[string]string) string {
	if len(versions) == 0 {
		return "nothing readable"
	}
	var out []string
	for arch, v := range versions {
		out = append(out, arch+": "+v)
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// arch is the instance's apk architecture: /etc/apk/arch, as apk itself
// reads it (apk-protocol.md §1); else Incus's name for the instance's
// architecture.
func (b *Backend) arch(ctx context.Context, c Client, inst string, log func(string)) (string, error) {
	s, err := readFile(ctx, c, inst, "/etc/apk/arch")
	if err != nil {
		return "", err
	}
	if a := strings.TrimSpace(s); a != "" && !strings.ContainsAny(a, " \t\n/") {
		return a, nil
	}
	in, _, err := c.GetInstance(ctx, inst)
	if err != nil {
		return "", err
	}
	a := apkArch(in.Architecture)
	log(fmt.Sprintf("%s: no /etc/apk/arch; taking %s from Incus's architecture %q", inst, a, in.Architecture))
	return a, nil
}

// apkArch maps Incus's architecture names to apk's.
func apkArch(incus string) string {
	switch incus {
	case "i686":
		return "x86"
	case "armv7l":
		return "armv7"
	case "armv6l":
		return "armhf"
	}
	return incus // x86_64, aarch64, ppc64le, s390x, riscv64, loongarch64 are the same
}

// installedVersion reads the version of pkg from the instance's apk
// database; "" when pkg is not installed.
func installedVersion(ctx context.Context, c Client, inst, pkg string) (string, error) {
	rc, err := openFile(ctx, c, inst, installedDB)
	if rc == nil {
		return "", err
	}
	defer rc.Close()
	v, err := findVersion(io.LimitReader(rc, maxInstalledDB), pkg)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", installedDB, err)
	}
	return v, nil
}

// maxInstalledDB bounds what is read of an installed database (a full
// Alpine desktop's is a few MiB).
const maxInstalledDB = 64 << 20

// findVersion scans an apk installed database (stanzas of "X:value"
// lines, a blank line between packages) for pkg's V:.
func findVersion(r io.Reader, pkg string) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20) // a p: line can be long
	var name, version string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if name == pkg {
				return version, nil
			}
			name, version = "", ""
		case strings.HasPrefix(line, "P:"):
			name = line[2:]
		case strings.HasPrefix(line, "V:"):
			version = line[2:]
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if name == pkg {
		return version, nil
	}
	return "", nil
}

// refresh fetches every repository's index, whatever the age of the
// cached one: apk-tools 2.14's plain "apk update" keeps an index younger
// than 4 h and -U one younger than a minute, so a commit published since
// would go unseen; --force-refresh always fetches, in 2.14 and 3.0
// (apk-protocol.md §7.2). It runs again for a while if it fails: right
// after a start the instance's network (even its loopback, where a proxy
// device listens) may not be up yet.
func (b *Backend) refresh(ctx context.Context, c Client, inst string, log func(string)) error {
	deadline := time.Now().Add(b.cfg.HealthTimeout)
	for {
		err := b.exec(ctx, c, inst, []string{"apk", "--force-refresh", "update"}, log)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func setState(ctx context.Context, c Client, inst, action string) error {
	o, err := c.UpdateInstanceState(ctx, inst, incus.InstanceStatePut{Action: action, Timeout: 30}, "")
	if err != nil {
		return err
	}
	return o.WaitContext(ctx)
}

// remove stops (forcibly) and deletes an instance.
func remove(ctx context.Context, c Client, inst string) error {
	o, err := c.UpdateInstanceState(ctx, inst, incus.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, "")
	if err == nil {
		err = o.WaitContext(ctx)
	}
	if err != nil && !incus.IsNotFound(err) && !strings.Contains(err.Error(), "already stopped") {
		return err
	}
	o, err = c.DeleteInstance(ctx, inst)
	if incus.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return o.WaitContext(ctx)
}

// instances lists an installation's instances, by name.
func instances(ctx context.Context, c Client, installation string) ([]incus.Instance, error) {
	list, err := c.GetInstancesWithFilter(ctx, incus.InstanceTypeContainer, []string{"config." + LabelInstallation + "=" + installation})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(list, func(a, b incus.Instance) int { return strings.Compare(a.Name, b.Name) })
	return list, nil
}

// old lists the installation's instances that op did not create.
func (b *Backend) old(ctx context.Context, c Client, op *ops.Operation, t ops.Target) ([]incus.Instance, error) {
	all, err := instances(ctx, c, t.Installation)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(i incus.Instance) bool { return i.Config[LabelOperation] == op.ID }), nil
}
