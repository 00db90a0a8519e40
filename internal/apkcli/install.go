package apkcli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/chainguard-dev/go-apk/pkg/apk"

	"github.com/uplinkhq/uplink/internal/apkfile"
)

// installedURI marks the resolver's pseudo-repository of installed packages.
const installedURI = "installed:"

// add is `apk add [-u] PACKAGE...`. As apk-tools does, it solves the
// whole world (/etc/apk/world with the arguments merged in), not just the
// arguments, with these preferences (apk-protocol.md §7.7, observed with
// apk-tools 2.14.10; src/solver.c):
//   - a name with a version constraint ("hello=1.0-r0") gets exactly a
//     version that satisfies it, downgrading if need be, and the
//     constraint stays in the world as a pin;
//   - any other installed package keeps its version unless -u names it
//     (or something it depends on); -u picks the newest version, which
//     may be the installed one: `add -u` never downgrades.
func (c *cli) add(args []string) error {
	d, err := c.openFor("add", args)
	if err != nil {
		return err
	}
	defer d.close()
	l, err := c.indexes()
	if err != nil {
		return err
	}
	world := mergeWorld(d.world, args, c.opts.upgrade)
	upgrading := map[string]bool{}
	if c.opts.upgrade {
		var names []string
		for _, a := range args {
			names = append(names, baseName(a))
		}
		upgrading = d.withDependencies(names)
	}
	pkgs, err := c.solve(d, c.namedIndexes(l.indexes, d), world, upgrading)
	if err != nil {
		return err
	}
	steps := addSteps(d, pkgs, upgrading)
	// Download and verify everything before changing the root.
	for _, s := range steps {
		data, err := c.get(s.pkg.URL())
		if err != nil {
			return fmt.Errorf("%s-%s: %v", s.pkg.Name, s.pkg.Version, packageError(err))
		}
		if err := apkfile.Verify(data, s.pkg.Package.ChecksumString()); err != nil {
			return fmt.Errorf("%s-%s: %v", s.pkg.Name, s.pkg.Version, err)
		}
		s.data = data
	}
	if err := c.applyAdd(d, steps); err != nil {
		return err
	}
	return c.saveWorld(d, world)
}

// solve selects the packages world needs. Installed packages stay at
// their version, unless the world pins them or they are upgrading; if
// that cannot be solved (a new package needs a newer dependency), it
// solves without.
func (c *cli) solve(d *db, named []apk.NamedIndex, world []string, upgrading map[string]bool) ([]*apk.RepositoryPackage, error) {
	pinned := map[string]bool{} // names the world gives an exact version
	for _, w := range world {
		if op := strings.TrimPrefix(w, baseName(w)); strings.HasPrefix(op, "=") && !strings.HasPrefix(op, "=~") {
			pinned[baseName(w)] = true
		}
	}
	var keep []string
	for _, p := range d.pkgs {
		if !pinned[p.Name] && !upgrading[p.Name] {
			keep = append(keep, p.Name+"="+p.Version)
		}
	}
	resolve := func(list []string) ([]*apk.RepositoryPackage, []string, error) {
		return apk.NewPkgResolver(c.ctx, named).GetPackagesWithDependencies(c.ctx, list)
	}
	pkgs, conflicts, err := resolve(append(slices.Clone(world), keep...))
	if err != nil && len(keep) > 0 {
		pkgs, conflicts, err = resolve(world)
	}
	if err != nil {
		return nil, fmt.Errorf("unable to select packages:\n  %v", err)
	}
	for _, name := range conflicts {
		if p := d.find(name); p != nil {
			return nil, fmt.Errorf("unable to select packages: conflicts with installed %s", p)
		}
	}
	return pkgs, nil
}

// addStep is one package add installs, and the installed one it replaces.
type addStep struct {
	pkg  *apk.RepositoryPackage
	old  *installedPkg
	data []byte
}

// addSteps lists what changes among the selected packages.
func addSteps(d *db, pkgs []*apk.RepositoryPackage, upgrading map[string]bool) []*addStep {
	var steps []*addStep
	for _, rp := range pkgs {
		if rp.Repository().URI == installedURI {
			continue
		}
		old := d.find(rp.Name)
		// The same version is a change only for a rebuild asked to upgrade.
		if old != nil && old.Version == rp.Version && (old.ChecksumString() == rp.ChecksumString() || !upgrading[rp.Name]) {
			continue
		}
		steps = append(steps, &addStep{pkg: rp, old: old})
	}
	return steps
}

// applyAdd installs the downloaded steps in order, saying what each does.
func (c *cli) applyAdd(d *db, steps []*addStep) error {
	for i, s := range steps {
		p := s.pkg
		switch {
		case s.old == nil:
			c.printf("(%d/%d) Installing %s (%s)\n", i+1, len(steps), p.Name, p.Version)
		default:
			verb := "Upgrading"
			if cmp, err := compareVersions(s.old.Version, p.Version); err == nil && cmp > 0 {
				verb = "Downgrading"
			} else if err == nil && cmp == 0 {
				verb = "Replacing"
			}
			c.printf("(%d/%d) %s %s (%s -> %s)\n", i+1, len(steps), verb, p.Name, s.old.Version, p.Version)
		}
		if err := c.installPackage(d, s.data, s.old); err != nil {
			return fmt.Errorf("%s-%s: %v", p.Name, p.Version, err)
		}
	}
	return nil
}

// saveWorld records world and prints the summary apk prints after a
// change.
func (c *cli) saveWorld(d *db, world []string) error {
	d.world = world
	if err := d.save(); err != nil {
		return err
	}
	c.printf("%s\n", d.summary())
	return nil
}

// openFor opens the database for cmd, which needs packages named.
func (c *cli) openFor(cmd string, names []string) (*db, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: no packages given", cmd)
	}
	return c.openDB()
}

// mergeWorld returns world with the add arguments in place of the entries
// of the same names (apk-tools' apk_deps_add): `add hello=1.0-r0` pins,
// `add hello` drops the pin. With -u a bare name keeps an existing pin
// (apk-protocol.md §7.7: "a pin that later `add -u hello` keeps").
func mergeWorld(world, args []string, upgrade bool) []string {
	out := slices.Clone(world)
	for _, a := range args {
		n := baseName(a)
		i := slices.IndexFunc(out, func(w string) bool { return baseName(w) == n })
		switch {
		case i < 0:
			out = append(out, a)
		case upgrade && a == n && baseName(out[i]) != out[i]:
			// keep the pin
		default:
			out[i] = a
		}
	}
	return out
}

// packageError says what apk-tools says when a package download fails
// (apk-protocol.md §7.5, src/io_url.c and src/database.c).
func packageError(err error) error {
	var he *httpError
	if !errors.As(err, &he) {
		return err
	}
	switch he.code {
	case http.StatusNotFound:
		return errors.New("package mentioned in index not found (try 'apk update')")
	case http.StatusInternalServerError:
		return errors.New("remote server returned error (try 'apk update')")
	case http.StatusServiceUnavailable:
		return errors.New("temporary error (try again later)")
	case http.StatusForbidden:
		return errors.New("Permission denied")
	case http.StatusBadRequest:
		return errors.New("Protocol error")
	}
	return err
}

// namedIndexes turns the repositories into go-apk resolver indexes, one
// per (repository, package arch): go-apk downloads <URI>/<file>, and
// apk-tools fetches a package below its own A: arch, not the index's.
// Installed packages form one more index, so dependencies on packages
// that no repository offers are still satisfied.
func (c *cli) namedIndexes(ixs []*repoIndex, d *db) []apk.NamedIndex {
	var named []apk.NamedIndex
	for _, ix := range ixs {
		byArch := map[string][]*apk.Package{}
		var archs []string
		for _, p := range ix.packages {
			a := p.Arch
			if a == "" {
				a = c.opts.arch
			}
			if byArch[a] == nil {
				archs = append(archs, a)
			}
			byArch[a] = append(byArch[a], p)
		}
		for _, a := range archs {
			repo := &apk.Repository{URI: ix.url + "/" + a}
			named = append(named, apk.NewNamedRepositoryWithIndex("", repo.WithIndex(&apk.APKIndex{Description: ix.description, Packages: byArch[a]})))
		}
	}
	var inst []*apk.Package
	for _, p := range d.pkgs {
		inst = append(inst, &p.Package)
	}
	repo := &apk.Repository{URI: installedURI}
	named = append(named, apk.NewNamedRepositoryWithIndex("", repo.WithIndex(&apk.APKIndex{Packages: inst})))
	return named
}

// baseName strips a version constraint: "hello>=1.0" -> "hello".
func baseName(constraint string) string {
	if i := strings.IndexAny(constraint, "=<>~"); i > 0 {
		return constraint[:i]
	}
	return constraint
}

func compareVersions(a, b string) (int, error) {
	va, err := apk.ParseVersion(a)
	if err != nil {
		return 0, err
	}
	vb, err := apk.ParseVersion(b)
	if err != nil {
		return 0, err
	}
	return apk.CompareVersions(va, vb), nil
}

// packageFromInfo builds the installed-database view of a package.
func packageFromInfo(info map[string][]string, control []byte, size int) *apk.Package {
	one := func(k string) string {
		if v := info[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	num := func(k string) uint64 {
		n, _ := strconv.ParseUint(one(k), 10, 64)
		return n
	}
	sum := sha1.Sum(control)
	p := &apk.Package{
		Name: one("pkgname"), Version: one("pkgver"), Arch: one("arch"),
		Description: one("pkgdesc"), License: one("license"), Origin: one("origin"),
		Maintainer: one("maintainer"), URL: one("url"), RepoCommit: one("commit"),
		Checksum: sum[:], Dependencies: info["depend"], Provides: info["provides"],
		Replaces: info["replaces"], InstallIf: strings.Fields(one("install_if")),
		Size: uint64(size), InstalledSize: num("size"), ProviderPriority: num("provider_priority"),
	}
	p.BuildDate = int64(num("builddate"))
	p.BuildTime = timeUnix(p.BuildDate)
	return p
}

// installPackage installs (or, with old, upgrades to) a verified package.
func (c *cli) installPackage(d *db, data []byte, old *installedPkg) error {
	members, err := apkfile.Members(data)
	if err != nil {
		return err
	}
	i := apkfile.ControlMember(members)
	info, scripts, err := apkfile.ReadControl(members[i])
	if err != nil {
		return err
	}
	pkg := packageFromInfo(info, members[i], len(data))
	root, err := os.OpenRoot(c.opts.root)
	if err != nil {
		return err
	}
	defer root.Close()

	// Files owned by other packages must not be overwritten.
	owners := map[string]string{}
	for _, p := range d.pkgs {
		if p.Name == pkg.Name || slices.Contains(pkg.Replaces, p.Name) {
			continue
		}
		for _, f := range p.Files {
			if f.Typeflag != tar.TypeDir {
				owners[f.Name] = p.String()
			}
		}
	}

	oldVersion := ""
	if old != nil {
		oldVersion = old.Version
		c.runScript(pkg, scripts, "pre-upgrade", pkg.Version, oldVersion)
	} else {
		c.runScript(pkg, scripts, "pre-install", pkg.Version)
	}
	zr, err := gzip.NewReader(bytes.NewReader(bytes.Join(members[i+1:], nil)))
	if err != nil {
		return err
	}
	entries, err := extract(root, tar.NewReader(zr), owners)
	if err != nil {
		return err
	}
	if old != nil {
		removeFiles(root, d, old, entries)
	}

	text := formatInstalled(pkg, entries)
	parsed, err := apk.ParseInstalled(strings.NewReader(text + "\n\n"))
	if err != nil || len(parsed) != 1 {
		return fmt.Errorf("installed database entry: %v", err)
	}
	d.put(&installedPkg{InstalledPackage: parsed[0], text: text})
	all, err := readScripts(c.opts.root)
	if err != nil {
		return err
	}
	if old != nil {
		dropScripts(all, &old.Package)
	}
	for name, body := range scripts {
		all[scriptName(pkg, name)] = body
	}
	if err := writeScripts(c.opts.root, all); err != nil {
		return err
	}
	if err := d.save(); err != nil {
		return err
	}
	if old != nil {
		c.runScript(pkg, scripts, "post-upgrade", pkg.Version, oldVersion)
	} else {
		c.runScript(pkg, scripts, "post-install", pkg.Version)
	}
	return nil
}

// extract writes a data tar below root and returns what it installed.
func extract(root *os.Root, tr *tar.Reader, owners map[string]string) ([]fileEntry, error) {
	var entries []fileEntry
	sums := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return entries, nil
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if name == "" {
			continue
		}
		if owner, ok := owners[name]; ok && h.Typeflag != tar.TypeDir {
			return nil, fmt.Errorf("trying to overwrite %s owned by %s", name, owner)
		}
		e := fileEntry{name: name, uid: h.Uid, gid: h.Gid, mode: h.Mode & 0o7777}
		switch h.Typeflag {
		case tar.TypeDir:
			e.dir = true
			if fi, err := root.Lstat(name); err == nil {
				if !fi.IsDir() && fi.Mode()&fs.ModeSymlink == 0 {
					return nil, fmt.Errorf("%s: exists and is not a directory", name)
				}
				break
			}
			if err := root.MkdirAll(name, 0o755); err != nil {
				return nil, err
			}
			if err := lchown(root, name, h); err != nil {
				return nil, err
			}
			if err := root.Chmod(name, fs.FileMode(e.mode)&fs.ModePerm|modeBits(e.mode)); err != nil {
				return nil, err
			}
		case tar.TypeReg:
			sum, err := writeFile(root, name, tr, h)
			if err != nil {
				return nil, err
			}
			e.checksum = sum
		case tar.TypeSymlink:
			e.mode = 0o777
			sum := sha1.Sum([]byte(h.Linkname))
			e.checksum = "Q1" + base64.StdEncoding.EncodeToString(sum[:])
			if target, err := root.Readlink(name); err == nil && target == h.Linkname {
				break
			}
			if err := removeNonDir(root, name); err != nil {
				return nil, err
			}
			if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
				return nil, err
			}
			if err := root.Symlink(h.Linkname, name); err != nil {
				return nil, err
			}
			if err := lchown(root, name, h); err != nil {
				return nil, err
			}
		case tar.TypeLink:
			target := strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")
			if err := removeNonDir(root, name); err != nil {
				return nil, err
			}
			if err := root.Link(target, name); err != nil {
				return nil, err
			}
			e.checksum = sums[target]
		default:
			return nil, fmt.Errorf("%s: unsupported file type %q", name, h.Typeflag)
		}
		if e.checksum != "" {
			sums[name] = e.checksum
		}
		entries = append(entries, e)
	}
}

// modeBits maps the setuid, setgid and sticky bits of a tar mode.
func modeBits(mode int64) fs.FileMode {
	var m fs.FileMode
	if mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// writeFile writes a regular file through a temporary name and a rename,
// so a running binary can be replaced, and returns its Q1 checksum.
func writeFile(root *os.Root, name string, r io.Reader, h *tar.Header) (string, error) {
	if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
		return "", err
	}
	if fi, err := root.Lstat(name); err == nil && fi.IsDir() {
		return "", fmt.Errorf("%s: exists and is a directory", name)
	}
	tmp := path.Join(path.Dir(name), ".apk."+rand.Text()[:16])
	f, err := root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	hash := sha1.New()
	_, err = io.Copy(io.MultiWriter(f, hash), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = lchown(root, tmp, h)
	}
	if err == nil {
		// After the chown, which clears setuid/setgid bits.
		err = root.Chmod(tmp, fs.FileMode(h.Mode)&fs.ModePerm|modeBits(h.Mode))
	}
	if err == nil {
		err = root.Chtimes(tmp, h.ModTime, h.ModTime)
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		root.Remove(tmp)
		return "", err
	}
	return "Q1" + base64.StdEncoding.EncodeToString(hash.Sum(nil)), nil
}

// lchown sets the owner from the tar header; only root may, so others
// keep their own.
func lchown(root *os.Root, name string, h *tar.Header) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return root.Lchown(name, h.Uid, h.Gid)
}

func removeNonDir(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s: exists and is a directory", name)
	}
	return root.Remove(name)
}

// removeFiles removes the files of old that keep (the new version's
// entries, if any) does not list, then its directories that are empty and
// listed by no other package.
func removeFiles(root *os.Root, d *db, old *installedPkg, keep []fileEntry) {
	kept := map[string]bool{}
	for _, e := range keep {
		kept[e.name] = true
	}
	var dirs []string
	for _, f := range old.Files {
		name := strings.TrimSuffix(f.Name, "/")
		if kept[name] {
			continue
		}
		if f.Typeflag == tar.TypeDir {
			dirs = append(dirs, name)
			continue
		}
		root.Remove(name)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(dirs))) // children first
	for _, dir := range dirs {
		if !d.dirOwned(dir, old.Name) {
			root.Remove(dir) // fails, as intended, if not empty
		}
	}
}

func dropScripts(all map[string][]byte, p *apk.Package) {
	prefix := p.Name + "-" + p.Version + "."
	for name := range all {
		if strings.HasPrefix(name, prefix) {
			delete(all, name)
		}
	}
}

// runScript runs a package script (e.g. "post-install") in the root, as
// apk-tools does: the script with the new (and old) version as arguments.
// A failing script is reported and counted as an error, and the
// transaction goes on.
func (c *cli) runScript(pkg *apk.Package, scripts map[string][]byte, script string, args ...string) {
	body, ok := scripts[script]
	if !ok {
		return
	}
	label := pkg.Name + "-" + pkg.Version + "." + script
	c.printf("Executing %s\n", label)
	if err := c.execScript(label, body, args); err != nil {
		fmt.Fprintf(c.stderr, "ERROR: %s: %v\n", label, err)
		c.errors++
	}
}

func (c *cli) execScript(label string, body []byte, args []string) error {
	dir := "lib/apk/exec"
	if err := os.MkdirAll(rootPath(c.opts.root, dir), 0o700); err != nil {
		return err
	}
	rel := dir + "/" + label
	if err := os.WriteFile(rootPath(c.opts.root, rel), body, 0o700); err != nil {
		return err
	}
	defer os.Remove(rootPath(c.opts.root, rel))
	cmd := exec.Command("/"+rel, args...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdout, cmd.Stderr = c.stdout, c.stderr
	if c.opts.root != "/" {
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: c.opts.root}
	}
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("script exited with error %d", ee.ExitCode())
		}
		return err
	}
	return nil
}

// del is `apk del PACKAGE...`: remove the packages from the world, then
// every installed package the world no longer needs.
func (c *cli) del(names []string) error {
	d, err := c.openFor("del", names)
	if err != nil {
		return err
	}
	defer d.close()
	drop := map[string]bool{}
	for _, n := range names {
		if d.find(n) == nil && !slices.ContainsFunc(d.world, func(w string) bool { return baseName(w) == n }) {
			return fmt.Errorf("No such package: %s", n)
		}
		drop[n] = true
	}
	world := slices.DeleteFunc(slices.Clone(d.world), func(w string) bool { return drop[baseName(w)] })
	needed, neededBy := d.needed(world)
	for _, n := range names {
		if needed[n] {
			return fmt.Errorf("%s: still required by %s", n, neededBy[n])
		}
	}
	var remove []*installedPkg
	for _, p := range slices.Backward(d.pkgs) { // dependents before dependencies
		if !needed[p.Name] {
			remove = append(remove, p)
		}
	}
	if err := c.purge(d, world, remove); err != nil {
		return err
	}
	return c.saveWorld(d, world)
}

// needed returns the installed packages world needs, through installed
// dependencies, and for each what needs it.
func (d *db) needed(world []string) (needed map[string]bool, neededBy map[string]string) {
	provider := map[string]*installedPkg{}
	for _, p := range d.pkgs {
		provider[p.Name] = p
		for _, pr := range p.Provides {
			provider[baseName(pr)] = p
		}
	}
	needed, neededBy = map[string]bool{}, map[string]string{}
	var visit func(name, by string)
	visit = func(name, by string) {
		p := provider[baseName(name)]
		if p == nil || needed[p.Name] {
			return
		}
		needed[p.Name] = true
		neededBy[p.Name] = by
		for _, dep := range p.Dependencies {
			if dep != "" && !strings.HasPrefix(dep, "!") {
				visit(dep, p.String())
			}
		}
	}
	for _, w := range world {
		visit(w, "world")
	}
	return needed, neededBy
}

// purge removes packages in order with their deinstall scripts, saving
// the database (with world) after each.
func (c *cli) purge(d *db, world []string, remove []*installedPkg) error {
	root, err := os.OpenRoot(c.opts.root)
	if err != nil {
		return err
	}
	defer root.Close()
	all, err := readScripts(c.opts.root)
	if err != nil {
		return err
	}
	for i, p := range remove {
		c.printf("(%d/%d) Purging %s (%s)\n", i+1, len(remove), p.Name, p.Version)
		scripts := map[string][]byte{}
		for _, s := range []string{"pre-deinstall", "post-deinstall"} {
			if b, ok := all[scriptName(&p.Package, s)]; ok {
				scripts[s] = b
			}
		}
		c.runScript(&p.Package, scripts, "pre-deinstall", p.Version)
		removeFiles(root, d, p, nil)
		d.remove(p.Name)
		dropScripts(all, &p.Package)
		if err := writeScripts(c.opts.root, all); err != nil {
			return err
		}
		d.world = world
		if err := d.save(); err != nil {
			return err
		}
		c.runScript(&p.Package, scripts, "post-deinstall", p.Version)
	}
	return nil
}

// info is `apk info [-v] [PACKAGE...]`: installed packages, one a line;
// with names, only those (missing ones are an error).
func (c *cli) info(names []string) error {
	d, err := c.openDB()
	if err != nil {
		return err
	}
	defer d.close()
	show := func(p *installedPkg) {
		if c.opts.verbose || len(names) > 0 {
			fmt.Fprintln(c.stdout, p)
		} else {
			fmt.Fprintln(c.stdout, p.Name)
		}
	}
	if len(names) == 0 {
		for _, p := range d.pkgs {
			show(p)
		}
		return nil
	}
	var missing []string
	for _, n := range names {
		if p := d.find(n); p != nil {
			show(p)
		} else {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("not installed: %s", strings.Join(missing, " "))
	}
	return nil
}

func timeUnix(sec int64) time.Time { return time.Unix(sec, 0).UTC() }
