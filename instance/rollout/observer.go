package rollout

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/incus"
)

// Observer reads what runs from Incus: it implements instance.Observer,
// and the Reconciler observes through it.
type Observer struct {
	Incus  Projects
	Logger *slog.Logger
	// Reads bounds how many instances' apk databases are read at once
	// (default 4), ReadTimeout each read (default 10s): observing runs
	// every reconcile interval and on every view of an installation.
	Reads       int
	ReadTimeout time.Duration

	once  sync.Once
	slots chan struct{}
}

var _ instance.Observer = (*Observer)(nil)

// observeTimeout bounds an observation for a view: a slow Incus makes the
// view show no instances rather than hang.
const observeTimeout = 5 * time.Second

// Observe implements instance.Observer: every named installation gets a
// list, empty when Incus cannot be asked.
func (o *Observer) Observe(ctx context.Context, project string, installations []string) map[string][]instance.Instance {
	ctx, cancel := context.WithTimeout(ctx, observeTimeout)
	defer cancel()
	c := o.Incus(project)
	list, err := managed(ctx, c)
	if err != nil {
		o.logger().Warn("cannot list instances", "project", project, "installations", installations, "err", err)
		list = nil
	}
	return o.group(ctx, c, list, installations)
}

func (o *Observer) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.Default()
	}
	return o.Logger
}

// managed lists uplink's instances in c's project, by name.
func managed(ctx context.Context, c Client) ([]incus.Instance, error) {
	list, err := c.GetInstancesWithFilter(ctx, incus.InstanceTypeContainer, []string{"config." + LabelManaged + "=" + managedBy})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(list, func(a, b incus.Instance) int { return strings.Compare(a.Name, b.Name) })
	return list, nil
}

// group sorts list into the named installations' instances, with the
// version of the package each has installed, read from its apk database:
// the labels say what uplink installed and checked, the database what
// runs now. Where the database cannot be read, the label's version
// stands.
func (o *Observer) group(ctx context.Context, c Client, list []incus.Instance, installations []string) map[string][]instance.Instance {
	o.once.Do(func() {
		if o.Reads <= 0 {
			o.Reads = 4
		}
		if o.ReadTimeout <= 0 {
			o.ReadTimeout = 10 * time.Second
		}
		o.slots = make(chan struct{}, o.Reads)
	})
	out := make(map[string][]instance.Instance, len(installations))
	for _, name := range installations {
		out[name] = []instance.Instance{}
	}
	pkgs := map[string]string{} // the package whose version each instance's label names
	for _, in := range list {
		name := in.Config[LabelInstallation]
		if _, ok := out[name]; !ok {
			continue
		}
		out[name] = append(out[name], instance.Instance{Name: in.Name, Commit: in.Config[LabelCommit], State: in.Status,
			Version: in.Config[LabelVersion], Arch: apkArch(in.Architecture)})
		pkgs[in.Name] = in.Config[LabelPackage]
	}
	var wg sync.WaitGroup
	for _, insts := range out {
		for i := range insts {
			in := &insts[i]
			if pkg := pkgs[in.Name]; in.State == "Running" && pkg != "" {
				wg.Go(func() {
					if v, ok := o.installed(ctx, c, in.Name, pkg); ok {
						in.Version = v
					}
				})
			}
		}
	}
	wg.Wait()
	return out
}

// installed reads the installed version of pkg, one of at most Reads at
// a time.
func (o *Observer) installed(ctx context.Context, c Client, inst, pkg string) (string, bool) {
	select {
	case o.slots <- struct{}{}:
		defer func() { <-o.slots }()
	case <-ctx.Done():
		return "", false
	}
	rctx, cancel := context.WithTimeout(ctx, o.ReadTimeout)
	defer cancel()
	v, err := installedVersion(rctx, c, inst, pkg)
	if err != nil {
		o.logger().Warn("cannot read the installed version; keeping the label's", "instance", inst, "err", err)
		return "", false
	}
	return v, true
}
