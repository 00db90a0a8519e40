package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/client"
)

// publishCmd uploads a built repository and publishes it; a refused
// publish prints each problem and exits 1.
func (c *cli) publishCmd() *cobra.Command {
	var req api.PublishRequest
	var app string
	cmd := &cobra.Command{
		Use:   "publish <dir> --app <org>/<app> --commit <sha> --branch <b>",
		Short: "upload a built repository (<dir>/<arch>/...) and publish it",
		Args:  exactArgs("<dir>"),
	}
	cmd.RunE = c.runs(func(cmd *cobra.Command, args []string) int {
		if err := validPublish(app, req); err != nil {
			return fail(c.stderr, err)
		}
		files, err := repositoryFiles(args[0])
		if err != nil {
			return fail(c.stderr, err)
		}
		ctx, cl, stop, err := c.g.connect()
		if err != nil {
			return fail(c.stderr, err)
		}
		defer stop()
		return c.publish(ctx, cl, app, req, files)
	})
	fs := cmd.Flags()
	fs.StringVar(&app, "app", "", "the app, <org>/<app>")
	fs.StringVar(&req.Commit, "commit", "", "full commit SHA of the build")
	fs.StringVar(&req.Branch, "branch", "", "branch to move to the commit")
	fs.Var(listFlag{&req.Tags}, "tag", "tags to move to the commit (comma-separated or repeated)")
	fs.StringVar(&req.Message, "message", "", "commit message")
	fs.StringVar(&req.Author, "author", "", "commit author")
	return cmd
}

// publish uploads files, then publishes them.
func (c *cli) publish(ctx context.Context, cl *client.Client, app string, req api.PublishRequest, files []repoFile) int {
	stdout, stderr := c.stdout, c.stderr
	for _, f := range files {
		if err := cl.Upload(ctx, app, req.Commit, f.arch, f.name, f.path); err != nil {
			return fail(stderr, fmt.Errorf("uploading %s/%s: %w", f.arch, f.name, err))
		}
		if !c.g.json {
			fmt.Fprintf(stdout, "uploaded %s/%s\n", f.arch, f.name)
		}
	}
	build, err := cl.Publish(ctx, app, req)
	var ce *client.Error
	if errors.As(err, &ce) && len(ce.Problems) > 0 {
		if c.g.json {
			printJSON(stdout, map[string]any{"error": ce})
		}
		fmt.Fprintf(stderr, "uplink: publish refused (%s): %s %s is not published; its files can be fixed and uploaded again\n", ce.Code, app, req.Commit)
		for _, p := range ce.Problems {
			fmt.Fprintf(stderr, "  %s: %s\n", p.File, p.Problem)
		}
		if ce.Omitted > 0 {
			fmt.Fprintf(stderr, "  and %d more\n", ce.Omitted)
		}
		return exitFailed
	}
	if err != nil {
		return fail(stderr, fmt.Errorf("publishing: %w", err))
	}
	if c.g.json {
		printJSON(stdout, build)
	} else {
		fmt.Fprintf(stdout, "published %s %s (archs %s) on branch %q\n", app, build.Commit, strings.Join(build.Archs, ","), req.Branch)
	}
	return 0
}

// validPublish checks the flags before anything is uploaded.
func validPublish(app string, req api.PublishRequest) error {
	if _, err := artifact.ParseApp(app); err != nil {
		return fmt.Errorf("--app: %w", err)
	}
	if _, err := artifact.ParseCommit(req.Commit); err != nil {
		return fmt.Errorf("--commit: %w", err)
	}
	// Checked here too: JSON would carry invalid UTF-8 as U+FFFD, a valid
	// name the server could no longer refuse.
	if req.Branch != "" {
		if err := ref.ValidName("branch", req.Branch); err != nil {
			return fmt.Errorf("--branch: %w", err)
		}
	}
	for _, t := range req.Tags {
		if err := ref.ValidName("tag", t); err != nil {
			return fmt.Errorf("--tag: %w", err)
		}
	}
	return nil
}

type repoFile struct{ arch, name, path string }

// repositoryFiles lists <dir>/<arch>/<file>, packages before indexes so
// that an index never names a package not uploaded yet.
func repositoryFiles(dir string) ([]repoFile, error) {
	archs, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []repoFile
	for _, a := range archs {
		if !a.IsDir() {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(dir, a.Name()))
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.Type().IsRegular() && artifact.ValidFile(e.Name()) == nil {
				files = append(files, repoFile{a.Name(), e.Name(), filepath.Join(dir, a.Name(), e.Name())})
			}
		}
	}
	slices.SortStableFunc(files, func(x, y repoFile) int {
		if artifact.IsIndex(x.name) != artifact.IsIndex(y.name) {
			if artifact.IsIndex(x.name) {
				return 1
			}
			return -1
		}
		return strings.Compare(x.arch+"/"+x.name, y.arch+"/"+y.name)
	})
	if !slices.ContainsFunc(files, func(f repoFile) bool { return artifact.IsIndex(f.name) }) {
		return nil, fmt.Errorf("%s: no <arch>/%s found", dir, artifact.IndexFile)
	}
	return files, nil
}
