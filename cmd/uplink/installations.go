package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/uplinkhq/uplink/internal/api"
)

// cmdInstallations is `uplink installations [name]`.
func cmdInstallations(args []string, stdout, stderr io.Writer) int {
	fs, cf := newAPIFlagSet("installations", "installations [<name>] [flags]")
	pos, code, ok := parseCommand(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 1 {
		return usageError(fs, stderr, "at most one installation name")
	}
	ctx, c, stop, err := cf.connect()
	if err != nil {
		return fail(stderr, err)
	}
	defer stop()
	if len(pos) == 1 {
		v, err := c.Installation(ctx, pos[0])
		if err != nil {
			return fail(stderr, err)
		}
		printOne(stdout, cf.json, v, printInstallation)
		return 0
	}
	list, err := c.Installations(ctx)
	if err != nil {
		return fail(stderr, err)
	}
	printList(stdout, cf.json, "installations", list, "NAME\tAPP\tPACKAGE\tCHANNEL\tCOMMIT\tREPOSITORY URL\tLAST OP\tLAST ATTEMPT",
		func(v api.Installation) []string {
			return []string{v.Name, v.App, v.Package, channelString(&v.Channel), orDash(short(v.ResolvedCommit)),
				orDash(v.RepositoryURL), opSummary(v.LastOperation), attemptString(v.LastAttempt)}
		})
	return 0
}

// printInstallation shows one installation in detail.
func printInstallation(w io.Writer, v api.Installation) {
	tw := newTable(w)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("name", v.Name)
	row("app", v.App)
	row("package", v.Package)
	ch := channelString(&v.Channel)
	if v.Channel.Tag != "" && v.Channel.Commit != "" {
		ch += " (commit " + v.Channel.Commit + ")"
	}
	row("channel", ch)
	row("commit", orDash(v.ResolvedCommit))
	row("repository url", orDash(v.RepositoryURL))
	in := v.Instances
	desc := fmt.Sprintf("%d", in.Count)
	if in.Image != "" {
		desc += " from " + in.Image
	}
	if len(in.Profiles) > 0 {
		desc += ", profiles " + strings.Join(in.Profiles, ",")
	}
	if in.Project != "" {
		desc += ", project " + in.Project
	}
	row("instances", desc)
	if v.KeyName != "" {
		row("key name", v.KeyName)
	}
	if len(v.HealthCommand) > 0 {
		row("health command", strings.Join(v.HealthCommand, " "))
	}
	row("created", localTime(v.CreatedAt))
	row("updated", localTime(v.UpdatedAt))
	if op := v.LastOperation; op != nil {
		row("last operation", fmt.Sprintf("%s %s %s (%d/%d steps)", op.ID, op.Kind, op.State, op.Progress.Done, op.Progress.Total))
		if op.Error != "" {
			row("last error", firstLine(op.Error))
		}
	} else {
		row("last operation", "-")
	}
	if v.Pending != nil {
		row("changing to", attemptString(v.Pending))
	}
	if a := v.LastAttempt; a != nil {
		// The channel above is what the instances run; this change failed.
		row("last attempt", attemptString(a)+", failed")
		if a.Error != "" {
			row("attempt error", firstLine(a.Error))
		}
	}
	tw.Flush()
	if len(v.Observed) > 0 {
		fmt.Fprintln(w, "\nobserved instances:")
		tw = newTable(w)
		fmt.Fprintln(tw, "  NAME\tCOMMIT\tSTATE")
		for _, i := range v.Observed {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", i.Name, orDash(short(i.Commit)), orDash(i.State))
		}
		tw.Flush()
	}
}

// attemptString is "branch bad (0123456789ab) by web.3", or "-".
func attemptString(a *api.Attempt) string {
	if a == nil {
		return "-"
	}
	s := channelString(&a.Channel)
	if a.Commit != "" && a.Channel.Commit == "" {
		s += " (" + short(a.Commit) + ")"
	}
	return s + " by " + a.Operation
}

// opSummary is "<id> <state>", or "-".
func opSummary(op *api.Operation) string {
	if op == nil {
		return "-"
	}
	return op.ID + " " + string(op.State)
}
