package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/uplinkhq/uplink/internal/api"
)

// installationsCmd is `uplink installations [<name>]`, and its create
// and rm.
func (c *cli) installationsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "installations [<name>]",
		Short: "list installations, or show one; create or remove one",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return errors.New("at most one installation name")
			}
			return nil
		},
	}
	cmd.RunE = c.runs(func(cmd *cobra.Command, args []string) int {
		ctx, cl, stop, err := c.g.connect()
		if err != nil {
			return fail(c.stderr, err)
		}
		defer stop()
		if len(args) == 1 {
			v, err := cl.Installation(ctx, args[0])
			if err != nil {
				return fail(c.stderr, err)
			}
			printOne(c.stdout, c.g.json, v, printInstallation)
			return 0
		}
		list, err := cl.Installations(ctx)
		if err != nil {
			return fail(c.stderr, err)
		}
		printList(c.stdout, c.g.json, "installations", list, "NAME\tAPP\tPACKAGE\tCHANNEL\tCOMMIT\tREPOSITORY URL\tLAST OP\tLAST ATTEMPT",
			func(v api.Installation) []string {
				return []string{v.Name, v.App, v.Package, channelString(&v.Channel), orDash(short(v.ResolvedCommit)),
					orDash(v.RepositoryURL), opSummary(v.LastOperation), attemptString(v.LastAttempt)}
			})
		return 0
	})
	cmd.AddCommand(c.installationsCreateCmd(), c.installationsRmCmd())
	return cmd
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
