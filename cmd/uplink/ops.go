package main

import (
	"fmt"
	"io"
	"time"

	"github.com/uplinkhq/uplink/internal/api"
)

// cmdOps is `uplink ops watch <id> | show <id> | list <installation>`.
func cmdOps(args []string, stdout, stderr io.Writer) int {
	fs, cf := newAPIFlagSet("ops", "ops watch <id> | show <id> | list <installation> [flags]\n\n"+
		"  watch <id>            follow an operation until it ends (exit 1 if it fails)\n"+
		"  show <id>             one operation: its steps and log\n"+
		"  list <installation>   an installation's operations, newest first")
	sub, rest, code, ok := parseSubcommand(fs, args, stdout, stderr,
		subcommand{"watch", "<id>"}, subcommand{"show", "<id>"}, subcommand{"list", "<installation>"})
	if !ok {
		return code
	}
	ctx, c, stop, err := cf.connect()
	if err != nil {
		return fail(stderr, err)
	}
	defer stop()
	switch sub {
	case "watch":
		return follow(ctx, c, rest[0], cf.json, stdout, stderr)
	case "show":
		op, err := c.Operation(ctx, rest[0])
		if err != nil {
			return fail(stderr, err)
		}
		printOne(stdout, cf.json, op, printOperation)
		return 0
	}
	list, err := c.Operations(ctx, rest[0])
	if err != nil {
		return fail(stderr, err)
	}
	printList(stdout, cf.json, "operations", list, "ID\tKIND\tSTATE\tSTEPS\tFROM\tTO\tCOMMIT\tCREATED\tERROR", func(op *api.Operation) []string {
		msg := firstLine(op.Error)
		if len(msg) > 60 {
			msg = msg[:57] + "..."
		}
		return []string{op.ID, string(op.Kind), string(op.State), fmt.Sprintf("%d/%d", op.Progress.Done, op.Progress.Total),
			endpointString(op.From), endpointString(op.To), orDash(short(op.Commit)), localTime(op.CreatedAt), orDash(msg)}
	})
	return 0
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
