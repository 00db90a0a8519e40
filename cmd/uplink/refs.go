package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/client"
)

// tagsCmd is `uplink tags add <org>/<app> <tag> <commit>` and `uplink
// tags rm <org>/<app> <tag>`.
func (c *cli) tagsCmd() *cobra.Command {
	add := c.appCall("add <org>/<app> <tag> <commit>", "point a tag at a build's commit (full or abbreviated SHA), creating or moving it",
		func(ctx context.Context, cl *client.Client, a []string) (string, error) {
			return fmt.Sprintf("tag %s of %s now names %s", a[1], a[0], a[2]), cl.SetTag(ctx, a[0], a[1], a[2])
		})
	rm := c.appCall("rm <org>/<app> <tag>", "remove a tag (refused while an installation's channel names it)",
		func(ctx context.Context, cl *client.Client, a []string) (string, error) {
			return fmt.Sprintf("removed tag %s of %s", a[1], a[0]), cl.DeleteTag(ctx, a[0], a[1])
		})
	return c.parent("tags <command>", "add or remove an app's tags", add, rm)
}

// branchesCmd is `uplink branches rm <org>/<app> <branch>`.
func (c *cli) branchesCmd() *cobra.Command {
	rm := c.appCall("rm <org>/<app> <branch>", "remove a branch and its history, not its builds (refused while an installation tracks it)",
		func(ctx context.Context, cl *client.Client, a []string) (string, error) {
			return fmt.Sprintf("removed branch %s of %s", a[1], a[0]), cl.DeleteBranch(ctx, a[0], a[1])
		})
	return c.parent("branches <command>", "remove an app's branches", rm)
}

// buildsRmCmd is `uplink builds rm <org>/<app> <commit>`.
func (c *cli) buildsRmCmd() *cobra.Command {
	return c.appCall("rm <org>/<app> <commit>", "delete a build: its artifacts, record and history entries (refused while a ref or an installation uses it)",
		func(ctx context.Context, cl *client.Client, a []string) (string, error) {
			return fmt.Sprintf("deleted build %s of %s", a[1], a[0]), cl.DeleteBuild(ctx, a[0], a[1])
		})
}

// appCall is a command of one call about an app: use names its
// arguments, the first <org>/<app>; call returns what it did, printed
// when it succeeded (and not --json: the API answers no body).
func (c *cli) appCall(use, short string, call func(ctx context.Context, cl *client.Client, args []string) (string, error)) *cobra.Command {
	_, names, _ := strings.Cut(use, " ")
	cmd := &cobra.Command{Use: use, Short: short, Args: exactArgs(names)}
	cmd.RunE = c.appRun(func(ctx context.Context, cl *client.Client, args []string) error {
		did, err := call(ctx, cl, args)
		if err != nil {
			return err
		}
		if !c.g.json {
			fmt.Fprintln(c.stdout, did)
		}
		return nil
	})
	return cmd
}

// pruneCmd is `uplink prune <org>/<app> [--dry-run]`.
func (c *cli) pruneCmd() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "prune <org>/<app> [--dry-run]",
		Short: "apply the app's retention policy now: print what is (or would be) deleted",
		Args:  exactArgs("<org>/<app>"),
	}
	cmd.RunE = c.appRun(func(ctx context.Context, cl *client.Client, args []string) error {
		r, err := cl.Prune(ctx, args[0], dryRun)
		if err != nil {
			return err
		}
		printOne(c.stdout, c.g.json, r, printPrune)
		return nil
	})
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only list what a prune would delete")
	return cmd
}

// printPrune lists the builds a prune deleted, then a summary.
func printPrune(w io.Writer, r api.PruneReport) {
	verb := "deleted"
	if r.DryRun {
		verb = "would delete"
	}
	if len(r.Deleted) > 0 {
		printList(w, false, "", r.Deleted, "COMMIT\tBRANCH\tPUBLISHED\tSIZE\tWHY", func(b api.PrunedBuild) []string {
			return []string{short(b.Commit), orDash(b.Branch), localTime(b.PublishedAt), humanize.IBytes(uint64(b.Bytes)), b.Reason}
		})
	}
	fmt.Fprintf(w, "%s %d builds (%s), kept %d\n", verb, len(r.Deleted), humanize.IBytes(uint64(max(r.Bytes, 0))), r.Kept)
}
