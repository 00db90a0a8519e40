package apkcli

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/chainguard-dev/go-apk/pkg/apk"
)

const (
	installedPath = "lib/apk/db/installed"
	scriptsPath   = "lib/apk/db/scripts.tar"
	lockPath      = "lib/apk/db/lock"
	worldPath     = "etc/apk/world"
)

// installedPkg is one package of /lib/apk/db/installed.
type installedPkg struct {
	*apk.InstalledPackage
	text string // its paragraph, without the blank line after it
}

func (p *installedPkg) String() string { return p.Name + "-" + p.Version }

// db is the installed database and world of a root, locked while open.
type db struct {
	root  string
	pkgs  []*installedPkg // in database order
	world []string
	lock  *os.File
}

// rootPath returns name (slash-separated, relative) below root.
func rootPath(root, name string) string {
	return filepath.Join(root, filepath.FromSlash(name))
}

// openDB locks and reads the database of c's root, creating an empty one
// (as `apk add --initdb` does) where there is none.
func (c *cli) openDB() (*db, error) {
	root := c.opts.root
	for _, d := range []string{"lib/apk/db", "etc/apk/keys", "var/cache/apk"} {
		if err := os.MkdirAll(rootPath(root, d), 0o755); err != nil {
			return nil, err
		}
	}
	lock, err := os.OpenFile(rootPath(root, lockPath), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("unable to lock database: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		c.printf("Waiting for repository lock\n")
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			lock.Close()
			return nil, fmt.Errorf("unable to lock database: %w", err)
		}
	}
	d := &db{root: root, lock: lock}
	if err := d.read(); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

func (d *db) close() {
	d.lock.Close() // releases the flock
}

func (d *db) read() error {
	b, err := os.ReadFile(rootPath(d.root, installedPath))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, para := range strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n\n") {
		para = strings.Trim(para, "\n")
		if para == "" {
			continue
		}
		parsed, err := apk.ParseInstalled(strings.NewReader(para + "\n\n"))
		if err != nil {
			return fmt.Errorf("%s: %w", installedPath, err)
		}
		if len(parsed) != 1 {
			return fmt.Errorf("%s: bad entry %q", installedPath, firstLine(para))
		}
		d.pkgs = append(d.pkgs, &installedPkg{InstalledPackage: parsed[0], text: para})
	}
	w, err := os.ReadFile(rootPath(d.root, worldPath))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	d.world = strings.Fields(string(w))
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// find returns the installed package called name, or nil.
func (d *db) find(name string) *installedPkg {
	for _, p := range d.pkgs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// put adds p to the database, replacing the package of the same name.
func (d *db) put(p *installedPkg) {
	for i, old := range d.pkgs {
		if old.Name == p.Name {
			d.pkgs[i] = p
			return
		}
	}
	d.pkgs = append(d.pkgs, p)
}

func (d *db) remove(name string) {
	d.pkgs = slices.DeleteFunc(d.pkgs, func(p *installedPkg) bool { return p.Name == name })
}

// save writes the installed database and world atomically.
func (d *db) save() error {
	var b strings.Builder
	for _, p := range d.pkgs {
		b.WriteString(p.text)
		b.WriteString("\n\n")
	}
	if err := writeFileAtomic(rootPath(d.root, installedPath), []byte(b.String()), 0o644); err != nil {
		return err
	}
	world := slices.Clone(d.world)
	slices.Sort(world)
	world = slices.Compact(world)
	return writeFileAtomic(rootPath(d.root, worldPath), []byte(strings.Join(world, "\n")+"\n"), 0o644)
}

// dirOwned reports whether an installed package other than except lists dir.
func (d *db) dirOwned(dir, except string) bool {
	for _, p := range d.pkgs {
		if p.Name == except {
			continue
		}
		for _, f := range p.Files {
			if f.Typeflag == tar.TypeDir && strings.TrimSuffix(f.Name, "/") == dir {
				return true
			}
		}
	}
	return false
}

// summary is the closing "OK: <installed size> in <n> packages" line.
func (d *db) summary() string {
	var size uint64
	for _, p := range d.pkgs {
		size += p.InstalledSize
	}
	return fmt.Sprintf("OK: %s in %d packages", humanSize(size), len(d.pkgs))
}

func humanSize(n uint64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d KiB", (n+1023)/1024)
	}
	return fmt.Sprintf("%d MiB", (n+1<<20-1)>>20)
}

// fileEntry is one installed directory or file of a package.
type fileEntry struct {
	name     string // relative, no trailing slash
	dir      bool
	uid, gid int
	mode     int64  // permission bits
	checksum string // Q1... for files and symlinks
}

// formatInstalled returns the installed-database paragraph of pkg: the
// package fields as go-apk writes them, then each directory (F:, M: for
// non-default owner or mode) followed by its files (R:, a:, Z:).
func formatInstalled(pkg *apk.Package, entries []fileEntry) string {
	lines := apk.PackageToInstalled(pkg)
	dirs := map[string]*fileEntry{}
	files := map[string][]fileEntry{}
	for _, e := range entries {
		if e.dir {
			e := e
			dirs[e.name] = &e
			continue
		}
		parent := path.Dir(e.name)
		files[parent] = append(files[parent], e)
		for d := parent; d != "." && dirs[d] == nil; d = path.Dir(d) {
			dirs[d] = &fileEntry{name: d, dir: true, mode: 0o755}
		}
	}
	writeFiles := func(fs []fileEntry) {
		sort.Slice(fs, func(i, j int) bool { return fs[i].name < fs[j].name })
		for _, f := range fs {
			lines = append(lines, "R:"+path.Base(f.name))
			if f.mode != 0o644 || f.uid != 0 || f.gid != 0 {
				lines = append(lines, fmt.Sprintf("a:%d:%d:%04o", f.uid, f.gid, f.mode))
			}
			if f.checksum != "" {
				lines = append(lines, "Z:"+f.checksum)
			}
		}
	}
	writeFiles(files["."]) // top-level files come before any F: line
	names := make([]string, 0, len(dirs))
	for n := range dirs {
		names = append(names, n)
	}
	sort.Strings(names) // a parent is a prefix of its children
	for _, n := range names {
		d := dirs[n]
		lines = append(lines, "F:"+n)
		if d.mode != 0o755 || d.uid != 0 || d.gid != 0 {
			lines = append(lines, fmt.Sprintf("M:%d:%d:%04o", d.uid, d.gid, d.mode))
		}
		writeFiles(files[n])
	}
	return strings.Join(lines, "\n")
}

// scriptName is a package script's name in scripts.tar, as apk-tools
// names it: <name>-<version>.<C: checksum>.<script>.
func scriptName(p *apk.Package, script string) string {
	return p.Name + "-" + p.Version + "." + p.ChecksumString() + "." + script
}

// readScripts returns the entries of scripts.tar.
func readScripts(root string) (map[string][]byte, error) {
	out := map[string][]byte{}
	f, err := os.Open(rootPath(root, scriptsPath))
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReader(f))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", scriptsPath, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		out[h.Name] = b
	}
}

// writeScripts replaces scripts.tar.
func writeScripts(root string, scripts map[string][]byte) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(scripts))
	for n := range scripts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o755, Size: int64(len(scripts[n])), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(scripts[n]); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return writeFileAtomic(rootPath(root, scriptsPath), buf.Bytes(), 0o644)
}

// writeFileAtomic writes name through a temporary file and a rename.
func writeFileAtomic(name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// withDependencies returns the installed packages called (or providing)
// names and, through their dependencies, every installed package they
// need: what `add -u` may upgrade (apk-tools passes the upgrade flag on to
// dependencies, src/solver.c), plus names that are not installed.
func (d *db) withDependencies(names []string) map[string]bool {
	provider := map[string]*installedPkg{}
	for _, p := range d.pkgs {
		for _, pr := range p.Provides {
			provider[baseName(pr)] = p
		}
	}
	for _, p := range d.pkgs {
		provider[p.Name] = p
	}
	out := map[string]bool{}
	var visit func(name string)
	visit = func(name string) {
		p := provider[name]
		if p == nil {
			out[name] = true
			return
		}
		if out[p.Name] {
			return
		}
		out[p.Name] = true
		for _, dep := range p.Dependencies {
			if dep != "" && !strings.HasPrefix(dep, "!") {
				visit(baseName(dep))
			}
		}
	}
	for _, n := range names {
		visit(n)
	}
	return out
}
