package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/internal/client"
)

// cmdKeys is `uplink keys add|list|rm`: the keys an app trusts, which
// publishes must be signed with and instances fetch from /keys/.
func cmdKeys(args []string, stdout, stderr io.Writer) int {
	var cf clientFlags
	var name string
	fs := newFlagSet("keys", "keys add <org>/<app> <file.rsa.pub> [--name <name>] | list <org>/<app> | rm <org>/<app> <name> [flags]\n\n"+
		"  add    register a public key (PEM) the app's indexes are signed with; the name is the\n"+
		"         file name apk looks it up by in /etc/apk/keys (default: the file's base name)\n"+
		"  list   the app's keys\n"+
		"  rm     remove a key")
	cf.register(fs)
	fs.StringVar(&name, "name", "", "key name for add (default: the file's base name, as abuild installs it)")
	pos, code, ok := parseCommand(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return usageError(fs, stderr, "name a subcommand: add, list or rm")
	}
	sub, rest := pos[0], pos[1:]
	want := map[string]int{"add": 2, "list": 1, "rm": 2}
	n, known := want[sub]
	if !known {
		return usageError(fs, stderr, fmt.Sprintf("unknown subcommand %q (add, list or rm)", sub))
	}
	if len(rest) != n {
		return usageError(fs, stderr, fmt.Sprintf("keys %s takes %d arguments, got %d", sub, n, len(rest)))
	}
	app := rest[0]
	if _, err := artifact.ParseApp(app); err != nil {
		return fail(stderr, err)
	}
	var pem []byte
	switch sub {
	case "add":
		if name == "" {
			name = filepath.Base(rest[1])
		}
		if err := distribution.ValidKeyName("key name", name); err != nil {
			return fail(stderr, err)
		}
		b, err := os.ReadFile(rest[1])
		if err != nil {
			return fail(stderr, err)
		}
		pem = b
	case "rm":
		name = rest[1]
	}
	c, err := cf.client()
	if err != nil {
		return fail(stderr, err)
	}
	ctx, stop := signalContext()
	defer stop()
	switch sub {
	case "add":
		k, created, err := c.PutKey(ctx, app, name, pem)
		if err != nil {
			return fail(stderr, err)
		}
		if cf.json {
			printJSON(stdout, k)
			return 0
		}
		verb := "registered"
		if !created {
			verb = "updated"
		}
		fmt.Fprintf(stdout, "%s key %s for %s (sha256 %s)\n", verb, k.Name, app, k.Fingerprint)
	case "rm":
		if err := c.DeleteKey(ctx, app, name); err != nil {
			return fail(stderr, err)
		}
		if !cf.json {
			fmt.Fprintf(stdout, "removed key %s of %s\n", name, app)
		}
	case "list":
		keys, err := c.Keys(ctx, app)
		if err != nil {
			return fail(stderr, err)
		}
		if cf.json {
			if keys == nil {
				keys = []client.Key{}
			}
			printJSON(stdout, map[string]any{"keys": keys})
			return 0
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSHA256\tCREATED")
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", k.Name, k.Fingerprint, localTime(k.CreatedAt))
		}
		tw.Flush()
	}
	return 0
}
