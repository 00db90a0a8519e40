package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/client"
)

// cmdChannel is `uplink channel <installation> --commit <sha> | --tag <t>
// | --branch <b>`: it changes the channel and follows the operation.
func cmdChannel(args []string, stdout, stderr io.Writer) int {
	var to api.Channel
	var noWait bool
	fs, cf := newAPIFlagSet("channel", "channel <installation> --commit <sha> | --tag <t> | --branch <b> [flags]")
	fs.StringVar(&to.Commit, "commit", "", "pin to this commit (a full SHA, or an abbreviation of at least 7 digits)")
	fs.StringVar(&to.Tag, "tag", "", "pin to the commit this tag names now")
	fs.StringVar(&to.Branch, "branch", "", "track this branch")
	fs.BoolVar(&noWait, "no-wait", false, "print the operation's id (with --json: the operation) and return without following it")
	pos, code, ok := parseCommand(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(fs, stderr, "name one installation")
	}
	var given, fromEnv []string
	for _, f := range []string{"commit", "tag", "branch"} {
		if fs.Lookup(f).Value.String() != "" {
			given = append(given, "--"+f)
			if _, set := os.LookupEnv(envName(f)); set {
				fromEnv = append(fromEnv, envName(f))
			}
		}
	}
	if len(given) != 1 {
		why := "give exactly one of --commit, --tag, --branch"
		if len(given) > 1 {
			why += " (got " + strings.Join(given, ", ")
			if len(fromEnv) > 0 {
				why += "; set in the environment: " + strings.Join(fromEnv, ", ")
			}
			why += ")"
		}
		return usageError(fs, stderr, why)
	}
	name := pos[0]
	ctx, c, stop, err := cf.connect()
	if err != nil {
		return fail(stderr, err)
	}
	defer stop()
	op, err := c.SetChannel(ctx, name, to)
	if err != nil {
		var busy *client.Error
		if errors.As(err, &busy) && busy.Busy() {
			return busyError(ctx, c, stderr, name, busy)
		}
		return fail(stderr, err)
	}
	if noWait {
		if cf.json {
			printJSON(stdout, op)
		} else {
			fmt.Fprintln(stdout, op.ID)
		}
		return 0
	}
	return follow(ctx, c, op.ID, cf.json, stdout, stderr)
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
		return fail(stderr, busy)
	}
	fmt.Fprintf(stderr, "uplink: installation %s is busy: operation %s is running\n", name, id)
	fmt.Fprintf(stderr, "uplink: follow it with: uplink ops watch %s\n", id)
	return 1
}
