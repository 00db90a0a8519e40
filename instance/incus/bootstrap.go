package incus

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

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
	Client *ProtocolIncus
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
	Logger        *slog.Logger
}

// Backend carries operations out on Incus: it implements
// ops.Backend.
type Backend struct {
	cfg BackendConfig
	log *slog.Logger
}

// NewBackend returns a Backend.
func NewBackend(cfg BackendConfig) *Backend {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 30 * time.Second
	}
	return &Backend{cfg: cfg, log: cfg.Logger}
}

// Steps implements ops.Backend: ops.InstanceSteps, which the backend
// of no instances records too.
func (b *Backend) Steps(op *ops.Operation, t ops.Target) []string { return ops.InstanceSteps(op, t) }

// step splits "install-package-2" into "install-package" and 2.
func step(name string) (string, int) {
	i := strings.LastIndexByte(name, '-')
	n, err := strconv.Atoi(name[i+1:])
	if i < 0 || err != nil {
		return name, 0
	}
	return name[:i], n
}

// newName is the name of the instance an operation creates for slot i:
// the same on every attempt, so a resumed operation finds its instance.
func newName(op *ops.Operation, i int) string {
	seq := op.ID[strings.LastIndexByte(op.ID, '.')+1:]
	return fmt.Sprintf("%s-%s-%d", op.Installation, seq, i)
}

// Do implements ops.Backend.
func (b *Backend) Do(ctx context.Context, name string, op *ops.Operation, t ops.Target, log func(string)) error {
	c := b.cfg.Client.UseProject(t.Project)
	action, i := step(name)
	switch action {
	case "create-instance", "start-instance", "configure-repository", "install-package", "restart-instance", "health-check":
		inst := newName(op, i)
		err := b.bootstrap(ctx, c, action, inst, op, t, log)
		if err != nil && !errors.Is(err, ops.ErrSkipped) && ctx.Err() == nil {
			// The new instance failed: it goes, the old ones stay as they are.
			log(fmt.Sprintf("%s failed: removing the new instance %s; the old instances are untouched", action, inst))
			if derr := remove(context.WithoutCancel(ctx), c, inst); derr != nil && !IsNotFound(derr) {
				log("could not remove " + inst + ": " + derr.Error())
			}
		}
		return err
	case "remove-old-instance":
		old, err := b.old(ctx, c, op, t)
		if err != nil {
			return err
		}
		if len(old) == 0 {
			log("no old instance left to remove")
			return ops.ErrSkipped
		}
		log("removing old instance " + old[0].Name + " (commit " + old[0].Config[LabelCommit] + ")")
		return remove(ctx, c, old[0].Name)
	case "remove-extra-instances":
		old, err := b.old(ctx, c, op, t)
		if err != nil {
			return err
		}
		if len(old) == 0 {
			return ops.ErrSkipped
		}
		for _, o := range old {
			log("removing instance " + o.Name + " beyond the installation's count")
			if err := remove(ctx, c, o.Name); err != nil {
				return err
			}
		}
		return nil
	case "upgrade-instance":
		insts, err := Instances(ctx, c, t.Installation)
		if err != nil {
			return err
		}
		if i > len(insts) {
			log(fmt.Sprintf("no instance %d to upgrade (the installation has %d)", i, len(insts)))
			return ops.ErrSkipped
		}
		return b.install(ctx, c, insts[i-1].Name, t, log)
	case "delete-instances":
		insts, err := Instances(ctx, c, t.Installation)
		if err != nil {
			return err
		}
		for _, inst := range insts {
			log("removing instance " + inst.Name)
			if err := remove(ctx, c, inst.Name); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown step %q", name)
}

func (b *Backend) bootstrap(ctx context.Context, c *ProtocolIncus, action, inst string, op *ops.Operation, t ops.Target, log func(string)) error {
	switch action {
	case "create-instance":
		if _, _, err := c.GetInstance(ctx, inst); err == nil {
			log(inst + " exists already (resumed operation)")
			return nil
		} else if !IsNotFound(err) {
			return err
		}
		req := InstancesPost{
			Name: inst, Type: InstanceTypeContainer, Source: b.source(t.Image),
			InstancePut: InstancePut{Profiles: t.Profiles, Config: map[string]string{
				LabelManaged: managedBy, LabelInstallation: t.Installation, LabelOperation: op.ID,
			}},
		}
		if dev, ok := b.proxyDevice(t.RepositoryURL); ok {
			req.Devices = map[string]map[string]string{"uplink-distribution": dev}
		}
		log(fmt.Sprintf("creating %s from image %s in project %s", inst, t.Image, t.Project))
		o, err := c.CreateInstance(ctx, req)
		if err != nil {
			return err
		}
		return o.WaitContext(ctx)
	case "start-instance":
		return setState(ctx, c, inst, "start")
	case "configure-repository":
		if err := c.CreateInstanceFile(ctx, inst, "/etc/apk/keys/"+t.KeyName, InstanceFileArgs{
			Content: strings.NewReader(t.PublicKey), Mode: 0o644, Type: "file",
		}); err != nil {
			return fmt.Errorf("pushing the key: %w", err)
		}
		repos, err := readFile(ctx, c, inst, "/etc/apk/repositories")
		if err != nil {
			return err
		}
		updated := repositories(repos, t.App, t.RepositoryURL)
		if err := c.CreateInstanceFile(ctx, inst, "/etc/apk/repositories", InstanceFileArgs{
			Content: strings.NewReader(updated), Mode: 0o644, Type: "file",
		}); err != nil {
			return fmt.Errorf("writing /etc/apk/repositories: %w", err)
		}
		log("/etc/apk/repositories: " + t.RepositoryURL)
		return nil
	case "install-package":
		return b.install(ctx, c, inst, t, log)
	case "restart-instance":
		return setState(ctx, c, inst, "restart")
	case "health-check":
		if len(t.HealthCommand) == 0 {
			log("no health command")
			return ops.ErrSkipped
		}
		deadline := time.Now().Add(b.cfg.HealthTimeout)
		for {
			err := b.exec(ctx, c, inst, t.HealthCommand, log)
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
	return fmt.Errorf("unknown step %q", action)
}

// source picks how Incus gets the image: pulled from a simplestreams
// server, or local by fingerprint or alias.
func (b *Backend) source(image string) InstanceSource {
	if b.cfg.ImageServer != "" {
		return InstanceSource{Type: "image", Mode: "pull", Protocol: "simplestreams", Server: b.cfg.ImageServer, Alias: image}
	}
	if len(image) >= 12 && isHex(image) {
		return InstanceSource{Type: "image", Fingerprint: image}
	}
	return InstanceSource{Type: "image", Alias: image}
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
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
		l := strings.TrimSpace(line)
		if strings.Contains(l, "/distribution/") && strings.HasSuffix(strings.TrimRight(l, "/"), "/"+app) {
			continue
		}
		out = append(out, line)
	}
	return strings.Join(append(out, url), "\n") + "\n"
}

func readFile(ctx context.Context, c *ProtocolIncus, inst, path string) (string, error) {
	rc, _, err := c.GetInstanceFile(ctx, inst, path)
	if IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	return string(b), err
}

// exec runs a command, putting its output in the operation log; a
// non-zero exit is an error.
func (b *Backend) exec(ctx context.Context, c *ProtocolIncus, inst string, cmd []string, log func(string)) error {
	log(inst + ": $ " + strings.Join(cmd, " ")) // which instance the output below is from
	var out bytes.Buffer
	code, err := c.ExecInstance(ctx, inst, InstanceExecPost{Command: cmd, RecordOutput: true, Environment: map[string]string{"HOME": "/root"}},
		&InstanceExecArgs{Stdout: &out, Stderr: &out})
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
func (b *Backend) install(ctx context.Context, c *ProtocolIncus, inst string, t ops.Target, log func(string)) error {
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
	return c.PatchInstance(ctx, inst, InstancePut{Config: map[string]string{
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
func (b *Backend) arch(ctx context.Context, c *ProtocolIncus, inst string, log func(string)) (string, error) {
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
func installedVersion(ctx context.Context, c *ProtocolIncus, inst, pkg string) (string, error) {
	rc, _, err := c.GetInstanceFile(ctx, inst, installedDB)
	if IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", installedDB, err)
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
func (b *Backend) refresh(ctx context.Context, c *ProtocolIncus, inst string, log func(string)) error {
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

func setState(ctx context.Context, c *ProtocolIncus, inst, action string) error {
	o, err := c.UpdateInstanceState(ctx, inst, InstanceStatePut{Action: action, Timeout: 30}, "")
	if err != nil {
		return err
	}
	return o.WaitContext(ctx)
}

// remove stops (forcibly) and deletes an instance.
func remove(ctx context.Context, c *ProtocolIncus, inst string) error {
	o, err := c.UpdateInstanceState(ctx, inst, InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, "")
	if err == nil {
		err = o.WaitContext(ctx)
	}
	if err != nil && !IsNotFound(err) && !strings.Contains(err.Error(), "already stopped") {
		return err
	}
	o, err = c.DeleteInstance(ctx, inst)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return o.WaitContext(ctx)
}

// Instances lists an installation's instances, by name.
func Instances(ctx context.Context, c *ProtocolIncus, installation string) ([]Instance, error) {
	list, err := c.GetInstancesWithFilter(ctx, InstanceTypeContainer, []string{"config." + LabelInstallation + "=" + installation})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(list, func(a, b Instance) int { return strings.Compare(a.Name, b.Name) })
	return list, nil
}

// old lists the installation's instances that op did not create.
func (b *Backend) old(ctx context.Context, c *ProtocolIncus, op *ops.Operation, t ops.Target) ([]Instance, error) {
	all, err := Instances(ctx, c, t.Installation)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(i Instance) bool { return i.Config[LabelOperation] == op.ID }), nil
}
