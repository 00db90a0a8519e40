package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/internal/api"
)

// installationsCreateCmd is `uplink installations create <name> --app
// <org>/<app> --package <p> --branch b | --commit sha | --tag t ...`: PUT
// /installations/<name>, then it follows the operation that installs it.
// The API creates or updates: the same command again changes nothing.
func (c *cli) installationsCreateCmd() *cobra.Command {
	var spec api.Spec
	var keyFile string
	var noWait bool
	cmd := &cobra.Command{
		Use:   "create <name> --app <org>/<app> --package <p> (--branch b | --commit sha | --tag t)",
		Short: "create (or update) an installation and follow the operation that installs it",
		Args:  exactArgs("<name>"),
	}
	cmd.RunE = c.runs(func(cmd *cobra.Command, args []string) int {
		if why := oneRef(cmd); why != "" {
			return c.usageError(cmd, why)
		}
		if _, err := artifact.ParseApp(spec.App); err != nil {
			return c.usageError(cmd, "--app: "+err.Error())
		}
		if spec.Package == "" {
			return c.usageError(cmd, "--package is required")
		}
		if keyFile != "" {
			name, pem, err := readKey(keyFile, spec.KeyName)
			if err != nil {
				return fail(c.stderr, fmt.Errorf("--public-key-file: %w", err))
			}
			spec.KeyName, spec.PublicKey = name, string(pem)
		}
		name := args[0]
		ctx, cl, stop, err := c.g.connect()
		if err != nil {
			return fail(c.stderr, err)
		}
		defer stop()
		v, created, err := cl.PutInstallation(ctx, name, spec)
		if err != nil {
			return c.refused(ctx, cl, name, err)
		}
		op := runningOperation(v)
		if op == nil || (noWait && c.g.json) {
			printOne(c.stdout, c.g.json, v, printInstallation)
			return 0
		}
		if !c.g.json && !noWait {
			verb := "updated"
			if created {
				verb = "created"
			}
			fmt.Fprintf(c.stdout, "%s installation %s\n", verb, name)
		}
		return c.followOrPrint(ctx, cl, op, noWait)
	})
	fs := cmd.Flags()
	fs.StringVar(&spec.App, "app", "", "the app, <org>/<app>")
	fs.StringVar(&spec.Package, "package", "", "the apk package to install")
	fs.StringVar(&spec.Channel.Branch, "branch", "", "track this branch")
	fs.StringVar(&spec.Channel.Commit, "commit", "", "pin to this commit (a full SHA, or an abbreviation of at least 7 digits)")
	fs.StringVar(&spec.Channel.Tag, "tag", "", "pin to the commit this tag names now")
	fs.IntVar(&spec.Instances.Count, "count", 1, "how many instances")
	fs.StringVar(&spec.Instances.Image, "image", "alpine/3.20", "image alias (or fingerprint) the instances are made from")
	fs.StringSliceVar(&spec.Instances.Profiles, "profile", nil, "Incus profile of the instances (repeated or comma-separated; default: default)")
	fs.StringVar(&spec.Instances.Project, "project", "", "Incus project (default: the server's --incus-project)")
	fs.StringVar(&spec.KeyName, "key-name", "", "the app's registered key the index must be signed with (uplink keys add); with --public-key-file, the name for that key")
	fs.StringVar(&keyFile, "public-key-file", "", "send this public key (PEM, e.g. ~/.abuild/<name>.rsa.pub) with the installation; its name is --key-name or the file's base name")
	fs.BoolVar(&noWait, "no-wait", false, "print the operation's id (with --json: the installation) and return without following it")
	return cmd
}

// runningOperation is the operation an installation's change runs, or nil.
func runningOperation(v api.Installation) *api.Operation {
	if v.Pending != nil {
		return &api.Operation{ID: v.Pending.Operation}
	}
	if op := v.LastOperation; op != nil && !op.State.Done() {
		return op
	}
	return nil
}

// installationsRmCmd is `uplink installations rm <name> [--no-wait]`: the
// operation that removes its instances, followed.
func (c *cli) installationsRmCmd() *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:   "rm <name>",
		Short: "remove an installation and its instances, following the operation",
		Args:  exactArgs("<name>"),
	}
	cmd.RunE = c.runs(func(cmd *cobra.Command, args []string) int {
		ctx, cl, stop, err := c.g.connect()
		if err != nil {
			return fail(c.stderr, err)
		}
		defer stop()
		op, err := cl.DeleteInstallation(ctx, args[0])
		if err != nil {
			return c.refused(ctx, cl, args[0], err)
		}
		return c.followOrPrint(ctx, cl, op, noWait)
	})
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "print the operation's id (with --json: the operation) and return without following it")
	return cmd
}
