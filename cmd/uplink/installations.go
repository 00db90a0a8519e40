package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/uplinkhq/uplink/instance"
	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/internal/client"
)

// parseCommand parses a command's arguments: -h prints the usage on
// stdout (exit 0), a bad flag or environment variable prints the problem
// and the usage on stderr (exit 2). ok is false when the command should
// exit with code.
func parseCommand(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (pos []string, code int, ok bool) {
	fs.SetOutput(io.Discard)
	pos, err := parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fs.Usage()
		return nil, 0, false
	}
	if err != nil {
		return nil, usageError(fs, stderr, err.Error()), false
	}
	return pos, 0, true
}

// usageError prints why a command line is wrong and the usage; exit 2.
func usageError(fs *flag.FlagSet, stderr io.Writer, why string) int {
	fmt.Fprintf(stderr, "uplink %s: %s\n\n", fs.Name(), why)
	fs.SetOutput(stderr)
	fs.Usage()
	return 2
}

// short abbreviates a commit to 12 digits.
func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

// orDash is s, or "-" when empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// channelString says what a channel installs from: "branch main",
// "tag v1.2" (a pin to the commit the tag named), "commit 0123456789ab".
func channelString(c *operation.Channel) string {
	switch {
	case c == nil || c.IsZero():
		return "-"
	case c.Tag != "":
		return "tag " + c.Tag
	case c.Commit != "":
		return "commit " + short(c.Commit)
	}
	return "branch " + c.Branch
}

func endpointString(e *operation.Endpoint) string {
	if e == nil {
		return "-"
	}
	return channelString(&e.Channel)
}

// attemptString is "branch bad (0123456789ab) by web.3", or "-".
func attemptString(a *instance.Attempt) string {
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
func opSummary(op *operation.Operation) string {
	if op == nil {
		return "-"
	}
	return op.ID + " " + string(op.State)
}

func localTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

func localTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return localTime(*t)
}

// cmdInstallations is `uplink installations [name]`.
func cmdInstallations(args []string, stdout, stderr io.Writer) int {
	var cf clientFlags
	fs := newFlagSet("installations", "installations [<name>] [flags]")
	cf.register(fs)
	pos, code, ok := parseCommand(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 1 {
		return usageError(fs, stderr, "at most one installation name")
	}
	c, err := cf.client()
	if err != nil {
		return fail(stderr, err)
	}
	ctx, stop := signalContext()
	defer stop()
	if len(pos) == 1 {
		v, err := c.Installation(ctx, pos[0])
		if err != nil {
			return fail(stderr, err)
		}
		if cf.json {
			printJSON(stdout, v)
		} else {
			printInstallation(stdout, v)
		}
		return 0
	}
	list, err := c.Installations(ctx)
	if err != nil {
		return fail(stderr, err)
	}
	if cf.json {
		if list == nil {
			list = []instance.View{}
		}
		printJSON(stdout, map[string]any{"installations": list})
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tAPP\tPACKAGE\tCHANNEL\tCOMMIT\tREPOSITORY URL\tLAST OP\tLAST ATTEMPT")
	for _, v := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.App, v.Package, channelString(&v.Channel),
			orDash(short(v.ResolvedCommit)), orDash(v.RepositoryURL), opSummary(v.LastOperation), attemptString(v.LastAttempt))
	}
	tw.Flush()
	return 0
}

// printInstallation shows one installation in detail.
func printInstallation(w io.Writer, v instance.View) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
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
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tCOMMIT\tSTATE")
		for _, i := range v.Observed {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", i.Name, orDash(short(i.Commit)), orDash(i.State))
		}
		tw.Flush()
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// cmdHistory is `uplink history <installation>`.
func cmdHistory(args []string, stdout, stderr io.Writer) int {
	var cf clientFlags
	fs := newFlagSet("history", "history <installation> [flags]")
	cf.register(fs)
	pos, code, ok := parseCommand(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(fs, stderr, "name one installation")
	}
	c, err := cf.client()
	if err != nil {
		return fail(stderr, err)
	}
	ctx, stop := signalContext()
	defer stop()
	list, err := c.History(ctx, pos[0])
	if err != nil {
		return fail(stderr, err)
	}
	if cf.json {
		if list == nil {
			list = []instance.HistoryEntry{}
		}
		printJSON(stdout, map[string]any{"history": list})
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WHEN\tFROM\tTO\tCOMMIT\tOPERATION\tRESULT")
	for _, h := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", localTime(h.At), channelString(h.From), channelString(&h.To),
			orDash(short(h.Commit)), orDash(h.Operation), orDash(string(h.Result)))
	}
	tw.Flush()
	return 0
}

// cmdChannel is `uplink channel <installation> --commit <sha> | --tag <t>
// | --branch <b>`: it changes the channel and follows the operation.
func cmdChannel(args []string, stdout, stderr io.Writer) int {
	var cf clientFlags
	var to operation.Channel
	var noWait bool
	fs := newFlagSet("channel", "channel <installation> --commit <sha> | --tag <t> | --branch <b> [flags]")
	cf.register(fs)
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
	c, err := cf.client()
	if err != nil {
		return fail(stderr, err)
	}
	ctx, stop := signalContext()
	defer stop()
	op, err := c.SetChannel(ctx, name, to)
	if err != nil {
		var busy *client.BusyError
		if errors.As(err, &busy) {
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
