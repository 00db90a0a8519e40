package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/client"
)

// opsCmd is `uplink ops watch <id> | show <id> | list <installation>`.
func (c *cli) opsCmd() *cobra.Command {
	watch := &cobra.Command{Use: "watch <id>", Short: "follow an operation until it ends (exit 1 if it fails)", Args: exactArgs("<id>")}
	watch.RunE = c.apiRun(func(ctx context.Context, cl *client.Client, args []string) int {
		return follow(ctx, cl, args[0], c.g.json, c.stdout, c.stderr)
	})
	show := &cobra.Command{Use: "show <id>", Short: "one operation: its steps and log", Args: exactArgs("<id>")}
	show.RunE = c.apiRun(func(ctx context.Context, cl *client.Client, args []string) int {
		op, err := cl.Operation(ctx, args[0])
		if err != nil {
			return fail(c.stderr, err)
		}
		printOne(c.stdout, c.g.json, op, printOperation)
		return 0
	})
	list := &cobra.Command{Use: "list <installation>", Short: "an installation's operations, newest first", Args: exactArgs("<installation>")}
	list.RunE = c.apiRun(func(ctx context.Context, cl *client.Client, args []string) int {
		ops, err := cl.Operations(ctx, args[0])
		if err != nil {
			return fail(c.stderr, err)
		}
		printList(c.stdout, c.g.json, "operations", ops, "ID\tKIND\tSTATE\tSTEPS\tFROM\tTO\tCOMMIT\tCREATED\tERROR", func(op *api.Operation) []string {
			msg := firstLine(op.Error)
			if len(msg) > 60 {
				msg = msg[:57] + "..."
			}
			return []string{op.ID, string(op.Kind), string(op.State), fmt.Sprintf("%d/%d", op.Progress.Done, op.Progress.Total),
				endpointString(op.From), endpointString(op.To), orDash(short(op.Commit)), localTime(op.CreatedAt), orDash(msg)}
		})
		return 0
	})
	return c.parent("ops <command>", "follow, show or list operations", watch, show, list)
}

// apiRun connects and runs f, which returns the exit code.
func (c *cli) apiRun(f func(ctx context.Context, cl *client.Client, args []string) int) func(*cobra.Command, []string) error {
	return c.runs(func(cmd *cobra.Command, args []string) int {
		ctx, cl, stop, err := c.g.connect()
		if err != nil {
			return fail(c.stderr, err)
		}
		defer stop()
		return f(ctx, cl, args)
	})
}

// printOperation shows one operation in detail.
func printOperation(w io.Writer, op *api.Operation) {
	tw := newTable(w)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("id", op.ID)
	row("kind", string(op.Kind))
	row("installation", op.Installation)
	row("state", string(op.State))
	row("from", endpointLong(op.From))
	row("to", endpointLong(op.To))
	row("commit", orDash(op.Commit))
	row("progress", fmt.Sprintf("%d/%d steps", op.Progress.Done, op.Progress.Total))
	row("created", localTime(op.CreatedAt))
	row("started", localTimePtr(op.StartedAt))
	row("finished", localTimePtr(op.FinishedAt))
	if op.Error != "" {
		row("error", op.Error)
	}
	tw.Flush()
	if len(op.Steps) > 0 {
		fmt.Fprintln(w, "\nsteps:")
		tw = newTable(w)
		fmt.Fprintln(tw, "  NAME\tSTATE\tSTARTED\tTOOK")
		for _, s := range op.Steps {
			took := "-"
			if s.StartedAt != nil && s.FinishedAt != nil {
				took = s.FinishedAt.Sub(*s.StartedAt).Round(time.Millisecond).String()
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.Name, s.State, localTimePtr(s.StartedAt), took)
		}
		tw.Flush()
	}
	if len(op.Log) > 0 {
		fmt.Fprintln(w, "\nlog:")
		printLog(w, op, "  ")
	}
}

func endpointString(e *api.Endpoint) string {
	if e == nil {
		return "-"
	}
	return channelString(&e.Channel)
}
