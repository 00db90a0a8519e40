package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/client"
)

// channelCmd is `uplink channel <installation> --commit <sha> | --tag <t>
// | --branch <b>`: it changes the channel and follows the operation.
func (c *cli) channelCmd() *cobra.Command {
	var to api.Channel
	var noWait bool
	cmd := &cobra.Command{
		Use:   "channel <installation> --commit <sha> | --tag <t> | --branch <b>",
		Short: "change an installation's channel and follow the operation",
		Args:  exactArgs("<installation>"),
	}
	cmd.RunE = c.runs(func(cmd *cobra.Command, args []string) int {
		if why := oneRef(cmd); why != "" {
			return c.usageError(cmd, why)
		}
		name := args[0]
		ctx, cl, stop, err := c.g.connect()
		if err != nil {
			return fail(c.stderr, err)
		}
		defer stop()
		op, err := cl.SetChannel(ctx, name, to)
		if err != nil {
			return c.refused(ctx, cl, name, err)
		}
		return c.followOrPrint(ctx, cl, op, noWait)
	})
	fs := cmd.Flags()
	fs.StringVar(&to.Commit, "commit", "", "pin to this commit (a full SHA, or an abbreviation of at least 7 digits)")
	fs.StringVar(&to.Tag, "tag", "", "pin to the commit this tag names now")
	fs.StringVar(&to.Branch, "branch", "", "track this branch")
	fs.BoolVar(&noWait, "no-wait", false, "print the operation's id (with --json: the operation) and return without following it")
	return cmd
}

// oneRef says why the --commit, --tag and --branch of cmd do not name
// exactly one ref, or "".
func oneRef(cmd *cobra.Command) string {
	var given, fromEnv []string
	for _, f := range []string{"commit", "tag", "branch"} {
		if cmd.Flags().Lookup(f).Value.String() != "" {
			given = append(given, "--"+f)
			if _, set := os.LookupEnv(envName(f)); set {
				fromEnv = append(fromEnv, envName(f))
			}
		}
	}
	if len(given) == 1 {
		return ""
	}
	why := "give exactly one of --commit, --tag, --branch"
	if len(given) > 1 {
		why += " (got " + strings.Join(given, ", ")
		if len(fromEnv) > 0 {
			why += "; set in the environment: " + strings.Join(fromEnv, ", ")
		}
		why += ")"
	}
	return why
}

// refused reports a change of installation name the server refused: a
// busy installation names its running operation (exit 3).
func (c *cli) refused(ctx context.Context, cl *client.Client, name string, err error) int {
	var busy *client.Error
	if errors.As(err, &busy) && busy.Busy() {
		return busyError(ctx, cl, c.stderr, name, busy)
	}
	return fail(c.stderr, err)
}

// followOrPrint follows op until it ends, or with noWait prints its id
// (with --json: the operation) and returns.
func (c *cli) followOrPrint(ctx context.Context, cl *client.Client, op *api.Operation, noWait bool) int {
	if !noWait {
		return follow(ctx, cl, op.ID, c.g.json, c.stdout, c.stderr)
	}
	if c.g.json {
		printJSON(c.stdout, op)
	} else {
		fmt.Fprintln(c.stdout, op.ID)
	}
	return 0
}

// busyError reports that another operation of the installation runs.
func busyError(ctx context.Context, c *client.Client, stderr io.Writer, name string, busy *client.Error) int {
	id := busy.Operation
	if id == "" {
		if ops, err := c.Operations(ctx, name); err == nil {
			for _, op := range ops {
				if !op.State.Done() {
					id = op.ID
					break
				}
			}
		}
	}
	if id == "" {
		return fail(stderr, busy) // busy: exit 3
	}
	fmt.Fprintf(stderr, "uplink: installation %s is busy: operation %s is running\n", name, id)
	fmt.Fprintf(stderr, "uplink: follow it with: uplink ops watch %s\n", id)
	return exitBusy
}
