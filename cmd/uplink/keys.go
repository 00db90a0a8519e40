package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/client"
)

// cmdKeys is `uplink keys add|list|rm`: the keys an app trusts, which
// publishes must be signed with and instances fetch from /keys/.
func cmdKeys(args []string, stdout, stderr io.Writer) int {
	var name string
	fs, cf := newAPIFlagSet("keys", "keys add <org>/<app> <file.rsa.pub> [--name <name>] | list <org>/<app> | rm <org>/<app> <name> [flags]\n\n"+
		"  add    register a public key (PEM) the app's indexes are signed with; the name is the\n"+
		"         file name apk looks it up by in /etc/apk/keys (default: the file's base name)\n"+
		"  list   the app's keys\n"+
		"  rm     remove a key")
	fs.StringVar(&name, "name", "", "key name for add (default: the file's base name, as abuild installs it)")
	sub, rest, code, ok := parseSubcommand(fs, args, stdout, stderr,
		subcommand{"add", "<org>/<app> <file.rsa.pub>"}, subcommand{"list", "<org>/<app>"}, subcommand{"rm", "<org>/<app> <name>"})
	if !ok {
		return code
	}
	app := rest[0]
	if _, err := artifact.ParseApp(app); err != nil {
		return fail(stderr, err)
	}
	var pem []byte
	switch sub {
	case "add":
		var err error
		if name, pem, err = readKey(rest[1], name); err != nil {
			return fail(stderr, err)
		}
	case "rm":
		name = rest[1]
	}
	ctx, c, stop, err := cf.connect()
	if err != nil {
		return fail(stderr, err)
	}
	defer stop()
	switch sub {
	case "add":
		err = keysAdd(ctx, c, stdout, cf.json, app, name, pem)
	case "rm":
		err = c.DeleteKey(ctx, app, name)
		if err == nil && !cf.json {
			fmt.Fprintf(stdout, "removed key %s of %s\n", name, app)
		}
	case "list":
		err = keysList(ctx, c, stdout, cf.json, app)
	}
	if err != nil {
		return fail(stderr, err)
	}
	return 0
}

// readKey reads a public key file; the key is named name, else after the
// file.
func readKey(file, name string) (string, []byte, error) {
	if name == "" {
		name = filepath.Base(file)
	}
	if err := distribution.ValidKeyName("key name", name); err != nil {
		return "", nil, err
	}
	pem, err := os.ReadFile(file)
	return name, pem, err
}

func keysAdd(ctx context.Context, c *client.Client, stdout io.Writer, jsonOut bool, app, name string, pem []byte) error {
	k, created, err := c.PutKey(ctx, app, name, pem)
	if err != nil {
		return err
	}
	if jsonOut {
		printJSON(stdout, k)
		return nil
	}
	verb := "registered"
	if !created {
		verb = "updated"
	}
	fmt.Fprintf(stdout, "%s key %s for %s (sha256 %s)\n", verb, k.Name, app, k.Fingerprint)
	return nil
}

func keysList(ctx context.Context, c *client.Client, stdout io.Writer, jsonOut bool, app string) error {
	keys, err := c.Keys(ctx, app)
	if err != nil {
		return err
	}
	printList(stdout, jsonOut, "keys", keys, "NAME\tSHA256\tCREATED", func(k api.Key) []string {
		return []string{k.Name, k.Fingerprint, localTime(k.CreatedAt)}
	})
	return nil
}
