// Package apkcli is a small but real APK v2 client for test containers:
// `apk update`, `apk add [-u] <pkg>[=<version>]...`, `apk del <pkg>...` and
// `apk info` against the repositories in /etc/apk/repositories, trusting
// only the keys in /etc/apk/keys, installing into the root filesystem and
// keeping apk-tools' installed database in /lib/apk/db. Alpine's own apk
// cannot be had without an Alpine mirror, so the busybox test image
// (internal/incusimage) ships this client, built static from ./cmd/apk, as
// /sbin/apk.
//
// It must be exactly as strict as apk-tools 2.14.10 wherever a rule
// decides an outcome, since a test that passes only because this client is
// kinder than apk proves nothing; each rule cites
// /work/shared/reference/apk-protocol.md and the apk-tools source:
//   - the index cache (§7.2): an index is reused while younger than 4 h,
//     even by plain `apk update`; -U makes that one minute;
//     --force-refresh always fetches; If-Modified-Since, 304;
//   - index signatures (§5): the key is the file in /etc/apk/keys named
//     exactly as the .SIGN.RSA/RSA256/RSA512 entry says; a failed refresh
//     keeps the old cache (§7.5);
//   - solving (§7.7): `add -u` never downgrades, `pkg=version` installs
//     exactly that version and pins it in /etc/apk/world;
//   - packages (§5, §7.5): the control member must hash to the index C:
//     and the data to the .PKGINFO datahash.
//
// It relies on github.com/chainguard-dev/go-apk for parsing indexes and the
// installed database and for resolving dependencies, and on package
// artifact for signatures. It adds what go-apk lacks or does in a way unfit
// for a live root: packages are fetched below their own A: arch, installed
// packages are upgraded in place (go-apk skips installed packages), and
// files are written through os.Root (go-apk's DirFS walks the whole
// target tree, /proc included, on construction).
//
// Output imitates apk-tools 2 ("fetch <url>", "(1/2) Installing hello
// (1.0-r0)", "Downgrading", "OK: ..."), errors go to stderr as "ERROR: ..."
// and any failure makes the exit status non-zero, except that, as in
// apk-tools, a repository whose index cannot be refreshed is only a
// warning for `add` (§7.5).
package apkcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// usage is printed for -h and for unknown commands.
const usage = `usage: apk [options] COMMAND [ARGS...]

commands:
  update                    fetch the indexes older than the cache max age (4 hours)
  add [-u] PACKAGE...       install packages (and dependencies); -u upgrades installed ones;
                            PACKAGE=VERSION installs exactly VERSION and pins it
  del PACKAGE...            remove packages and dependencies no longer needed
  info [-v]                 list installed packages (-v: with versions)

options:
  -U, --update-cache        refresh indexes older than one minute
      --force-refresh       refresh indexes always, bypassing HTTP caches
      --cache-max-age MIN   refresh indexes older than MIN minutes (default 4 hours)
  -u, --upgrade             (add) upgrade packages that are already installed
  -X, --repository URL      use URL in addition to /etc/apk/repositories
      --no-cache            neither read nor write the index cache
  -p, --root DIR            install below DIR instead of /
      --arch ARCH           package architecture (default /etc/apk/arch)
  -q, --quiet               print less
  -v, --verbose             print more
      --version             print the version
`

// versionFormat is what `apk --version` prints, for the arch: the
// apk-tools release whose rules this client follows (apk-protocol.md,
// v2.14.10), in its format.
const versionFormat = "apk-tools 2.14.10, compiled for %s.\n"

type options struct {
	root         string
	arch         string
	repos        []string // from -X
	upgrade      bool
	updateCache  bool          // -U: no If-Modified-Since (apk-protocol.md §7.2)
	forceRefresh bool          // --force-refresh
	cacheMaxAge  time.Duration // from -U or --cache-max-age, the last wins; 0 is the default
	noCache      bool
	quiet        bool
	verbose      bool
}

type cli struct {
	opts   options
	stdout io.Writer
	stderr io.Writer
	ctx    context.Context
	errors int // non-fatal errors (e.g. an index that could not be fetched)
}

// Main runs apk with args (without the program name) and returns the exit
// status.
func Main(args []string, stdout, stderr io.Writer) int {
	c := &cli{opts: options{root: "/"}, stdout: stdout, stderr: stderr, ctx: context.Background()}
	cmd, rest, err := c.parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "ERROR: %v\n", err)
		fmt.Fprint(stderr, usage)
		return 1
	}
	switch cmd {
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	if c.opts.arch == "" {
		c.opts.arch = c.defaultArch()
	}
	if cmd == "version" {
		fmt.Fprintf(stdout, versionFormat, c.opts.arch)
		return 0
	}
	switch cmd {
	case "update":
		if len(rest) > 0 {
			err = errors.New("update takes no arguments")
			break
		}
		err = c.update()
	case "add":
		err = c.add(rest)
	case "del":
		err = c.del(rest)
	case "info":
		err = c.info(rest)
	default:
		fmt.Fprintf(stderr, "ERROR: unknown command %q\n", cmd)
		fmt.Fprint(stderr, usage)
		return 1
	}
	if err != nil {
		for _, line := range strings.Split(strings.TrimRight(err.Error(), "\n"), "\n") {
			fmt.Fprintf(stderr, "ERROR: %s\n", line)
		}
		return 1
	}
	if c.errors > 0 {
		return 1
	}
	return 0
}

// parse splits options (allowed anywhere, as apk-tools does) from the
// command and its arguments.
func (c *cli) parse(args []string) (cmd string, rest []string, err error) {
	o := &c.opts
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, inline, hasInline := strings.Cut(a, "=")
		opt, takesValue := valueOptions[name]
		takesValue = takesValue && (strings.HasPrefix(name, "--") || a == name)
		switch {
		case a == "--":
			rest = append(rest, args[i+1:]...)
			i = len(args)
		case takesValue:
			v := inline
			if !hasInline || !strings.HasPrefix(name, "--") {
				if i+1 >= len(args) {
					return "", nil, fmt.Errorf("option %s needs a value", a)
				}
				i++
				v = args[i]
			}
			if err := o.setValue(opt, v); err != nil {
				return "", nil, err
			}
		case o.setFlag(a):
		case a == "--version" || a == "-V":
			return "version", nil, nil
		case a == "--help" || a == "-h":
			return "help", nil, nil
		case len(a) > 1 && a[0] == '-' && a[1] != '-':
			if err := o.setShort(a[1:]); err != nil {
				return "", nil, err
			}
		case strings.HasPrefix(a, "--"):
			return "", nil, fmt.Errorf("unknown option %s", a)
		case cmd == "":
			cmd = a
		default:
			rest = append(rest, a)
		}
	}
	if cmd == "" {
		return "help", nil, nil
	}
	return cmd, rest, nil
}

// valueOptions maps the options that take a value (--opt v, --opt=v, or
// for a short one -o v) to what they set.
var valueOptions = map[string]string{
	"--root": "root", "-p": "root",
	"--arch":       "arch",
	"--repository": "repository", "-X": "repository",
	"--cache-max-age": "cache-max-age",
}

func (o *options) setValue(opt, v string) error {
	switch opt {
	case "root":
		o.root = v
	case "arch":
		o.arch = v
	case "repository":
		o.repos = append(o.repos, v)
	case "cache-max-age":
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("--cache-max-age: %q is not a number of minutes", v)
		}
		// 0 means the 4 h default in 2.14.10 (§7.2, the update bug note).
		o.cacheMaxAge = time.Duration(n) * time.Minute
	}
	return nil
}

// setFlag sets a long option without a value; false if a is none.
func (o *options) setFlag(a string) bool {
	switch a {
	case "--update-cache":
		o.updateCache, o.cacheMaxAge = true, updateCacheMaxAge
	case "--force-refresh":
		o.forceRefresh = true
	case "--upgrade":
		o.upgrade = true
	case "--no-cache":
		o.noCache = true
	case "--quiet":
		o.quiet = true
	case "--verbose":
		o.verbose = true
	default:
		return false
	}
	return true
}

// shortFlags are the long options that have a one-letter form.
var shortFlags = map[rune]string{'U': "--update-cache", 'u': "--upgrade", 'q': "--quiet", 'v': "--verbose"}

// setShort sets bundled short flags, e.g. "Uu" of -Uu.
func (o *options) setShort(flags string) error {
	for _, f := range flags {
		if !o.setFlag(shortFlags[f]) {
			return fmt.Errorf("unknown option -%c", f)
		}
	}
	return nil
}

func (c *cli) printf(format string, args ...any) {
	if !c.opts.quiet {
		fmt.Fprintf(c.stdout, format, args...)
	}
}

func (c *cli) warnf(format string, args ...any) {
	fmt.Fprintf(c.stderr, "WARNING: "+format+"\n", args...)
}

// defaultArch is /etc/apk/arch in the root, else the machine's.
func (c *cli) defaultArch() string {
	if b, err := os.ReadFile(rootPath(c.opts.root, "etc/apk/arch")); err == nil {
		if a := strings.TrimSpace(string(b)); a != "" {
			return a
		}
	}
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "x86"
	case "arm":
		return "armv7"
	default:
		return runtime.GOARCH
	}
}
