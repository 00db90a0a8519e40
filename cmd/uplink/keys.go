package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/uplinkhq/uplink/distribution"
	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/client"
)

// keysCmd is `uplink keys add|list|rm`: the keys an app trusts, which
// publishes must be signed with and instances fetch from /keys/.
func (c *cli) keysCmd() *cobra.Command {
	var name string
	add := &cobra.Command{
		Use: "add <org>/<app> <file.rsa.pub> [--name <name>]",
		Short: "register a public key (PEM) the app's indexes are signed with; the name is the " +
			"file name apk looks it up by in /etc/apk/keys (default: the file's base name)",
		Args: exactArgs("<org>/<app> <file.rsa.pub>"),
	}
	add.Flags().StringVar(&name, "name", "", "key name (default: the file's base name, as abuild installs it)")
	add.RunE = c.appRun(func(ctx context.Context, cl *client.Client, args []string) error {
		name, pem, err := readKey(args[1], name)
		if err != nil {
			return err
		}
		return keysAdd(ctx, cl, c.stdout, c.g.json, args[0], name, pem)
	})
	list := &cobra.Command{Use: "list <org>/<app>", Short: "the app's keys", Args: exactArgs("<org>/<app>")}
	list.RunE = c.appRun(func(ctx context.Context, cl *client.Client, args []string) error {
		return keysList(ctx, cl, c.stdout, c.g.json, args[0])
	})
	rm := c.appCall("rm <org>/<app> <name>", "remove a key", func(ctx context.Context, cl *client.Client, a []string) (string, error) {
		return fmt.Sprintf("removed key %s of %s", a[1], a[0]), cl.DeleteKey(ctx, a[0], a[1])
	})
	return c.parent("keys <command>", "the keys an app's indexes must be signed with", add, list, rm)
}

// appRun checks the <org>/<app> argument, connects and runs f; its error
// is the command's failure.
func (c *cli) appRun(f func(ctx context.Context, cl *client.Client, args []string) error) func(*cobra.Command, []string) error {
	return c.apiRun(func(ctx context.Context, cl *client.Client, args []string) int {
		if _, err := artifact.ParseApp(args[0]); err != nil {
			return fail(c.stderr, err)
		}
		if err := f(ctx, cl, args); err != nil {
			return fail(c.stderr, err)
		}
		return 0
	})
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
