package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/dustin/go-humanize"
)

// envName maps a flag to its environment variable: admin-listen →
// UPLINK_ADMIN_LISTEN.
func envName(flag string) string {
	return "UPLINK_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// parse reads the command line, then UPLINK_* variables for the flags
// the command line left unset (so the command line wins, and a list flag
// given there replaces the environment's list), and returns the
// positional arguments. Flags may follow positionals.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && !set[f.Name] {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", envName(f.Name), v, err))
			}
		}
	})
	return pos, errors.Join(errs...)
}

func newFlagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "usage: uplink %s\n\nflags (each also read from UPLINK_<FLAG> in the environment):\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// sizeFlag accepts "256MiB", "1GB", "1048576".
type sizeFlag struct{ v *int64 }

func (s sizeFlag) String() string {
	if s.v == nil {
		return ""
	}
	return humanize.IBytes(uint64(*s.v))
}

func (s sizeFlag) Set(v string) error {
	n, err := humanize.ParseBytes(v)
	if err != nil {
		return fmt.Errorf("not a size (e.g. 256MiB): %q", v)
	}
	*s.v = int64(n)
	return nil
}

// listFlag is a comma-separated list; repeating the flag appends.
type listFlag struct{ v *[]string }

func (l listFlag) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}

// Type names the value in pflag's usage.
func (l listFlag) Type() string { return "list" }

func (l listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l.v = append(*l.v, s)
		}
	}
	return nil
}

// cidrFlag is a comma-separated list of CIDR prefixes or addresses.
type cidrFlag struct{ v *[]netip.Prefix }

func (c cidrFlag) String() string {
	if c.v == nil {
		return ""
	}
	s := make([]string, len(*c.v))
	for i, p := range *c.v {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (c cidrFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return fmt.Errorf("not a CIDR prefix or address: %q", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		*c.v = append(*c.v, p.Masked())
	}
	return nil
}
