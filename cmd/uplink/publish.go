package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/uplinkhq/uplink/distribution/artifact"
	"github.com/uplinkhq/uplink/distribution/ref"
	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/server"
)

// clientFlags are what every API command needs.
type clientFlags struct {
	addr, token, dataDir string
	json                 bool
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "addr", "http://127.0.0.1:4040", "admin API address")
	fs.StringVar(&c.token, "token", "", "admin bearer token (UPLINK_ADMIN_TOKEN; default: read from <data-dir>/"+server.TokenFile+")")
	fs.StringVar(&c.dataDir, "data-dir", "./uplink-data", "where a locally running uplink keeps its generated token")
	fs.BoolVar(&c.json, "json", false, "print JSON")
}

func (c *clientFlags) client() (*client.Client, error) {
	token := c.token
	if token == "" {
		// serve takes a list here; any one of them will do.
		token, _, _ = strings.Cut(os.Getenv("UPLINK_ADMIN_TOKEN"), ",")
		token = strings.TrimSpace(token)
	}
	if token == "" {
		b, err := os.ReadFile(filepath.Join(c.dataDir, server.TokenFile))
		if err != nil {
			return nil, fmt.Errorf("no admin token: pass --token or UPLINK_ADMIN_TOKEN (%v)", err)
		}
		token = strings.TrimSpace(string(b))
	}
	return client.New(c.addr, token), nil
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

func publish(args []string) int { return cmdPublish(args, os.Stdout, os.Stderr) }

// cmdPublish uploads a built repository and publishes it; a refused
// publish prints each problem and exits 1.
func cmdPublish(args []string, stdout, stderr io.Writer) int {
	var cf clientFlags
	var req ref.PublishRequest
	var app string
	fs := newFlagSet("publish", "publish <dir> --app <org>/<app> --commit <sha> --branch <b> [flags]")
	cf.register(fs)
	fs.StringVar(&app, "app", "", "the app, <org>/<app>")
	fs.StringVar(&req.Commit, "commit", "", "full commit SHA of the build")
	fs.StringVar(&req.Branch, "branch", "", "branch to move to the commit")
	fs.Var(listFlag{&req.Tags}, "tag", "tags to move to the commit (comma-separated or repeated)")
	fs.StringVar(&req.Message, "message", "", "commit message")
	fs.StringVar(&req.Author, "author", "", "commit author")
	pos, code, ok := parseCommand(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(fs, stderr, fmt.Sprintf("want one argument, got %d", len(pos)))
	}
	if _, err := artifact.ParseApp(app); err != nil {
		return fail(stderr, fmt.Errorf("--app: %w", err))
	}
	if _, err := artifact.ParseCommit(req.Commit); err != nil {
		return fail(stderr, fmt.Errorf("--commit: %w", err))
	}
	// Checked here too: JSON would carry invalid UTF-8 as U+FFFD, a valid
	// name the server could no longer refuse.
	if req.Branch != "" {
		if err := ref.ValidName("branch", req.Branch); err != nil {
			return fail(stderr, fmt.Errorf("--branch: %w", err))
		}
	}
	for _, t := range req.Tags {
		if err := ref.ValidName("tag", t); err != nil {
			return fail(stderr, fmt.Errorf("--tag: %w", err))
		}
	}
	files, err := repositoryFiles(pos[0])
	if err != nil {
		return fail(stderr, err)
	}
	c, err := cf.client()
	if err != nil {
		return fail(stderr, err)
	}
	ctx, stop := signalContext()
	defer stop()
	for _, f := range files {
		if err := c.Upload(ctx, app, req.Commit, f.arch, f.name, f.path); err != nil {
			return fail(stderr, fmt.Errorf("uploading %s/%s: %w", f.arch, f.name, err))
		}
		if !cf.json {
			fmt.Fprintf(stdout, "uploaded %s/%s\n", f.arch, f.name)
		}
	}
	build, err := c.Publish(ctx, app, req)
	var ce *client.Error
	if errors.As(err, &ce) && len(ce.Problems) > 0 {
		if cf.json {
			printJSON(stdout, map[string]any{"error": ce})
		}
		fmt.Fprintf(stderr, "uplink: publish refused (%s): %s %s is not published; its files can be fixed and uploaded again\n", ce.Code, app, req.Commit)
		for _, p := range ce.Problems {
			fmt.Fprintf(stderr, "  %s: %s\n", p.File, p.Problem)
		}
		if ce.Omitted > 0 {
			fmt.Fprintf(stderr, "  and %d more\n", ce.Omitted)
		}
		return 1
	}
	if err != nil {
		return fail(stderr, fmt.Errorf("publishing: %w", err))
	}
	if cf.json {
		printJSON(stdout, build)
	} else {
		fmt.Fprintf(stdout, "published %s %s (archs %s) on branch %q\n", app, build.Commit, strings.Join(build.Archs, ","), req.Branch)
	}
	return 0
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

func builds(args []string) int {
	var cf clientFlags
	var branch string
	var limit int
	fs := newFlagSet("builds", "builds <org>/<app> [--branch b] [--limit n] [flags]")
	cf.register(fs)
	fs.StringVar(&branch, "branch", "", "only this branch's history")
	fs.IntVar(&limit, "limit", 20, "at most this many builds")
	pos, code, ok := parseCommand(fs, args, os.Stdout, os.Stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(fs, os.Stderr, fmt.Sprintf("want one argument, got %d", len(pos)))
	}
	c, err := cf.client()
	if err != nil {
		return fail(os.Stderr, err)
	}
	ctx, stop := signalContext()
	defer stop()
	list, err := c.Builds(ctx, pos[0], branch, limit)
	if err != nil {
		return fail(os.Stderr, err)
	}
	if cf.json {
		printJSON(os.Stdout, map[string]any{"builds": list})
		return 0
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMMIT\tBRANCH\tTAGS\tARCHS\tPUBLISHED\tMESSAGE")
	for _, b := range list {
		msg, _, _ := strings.Cut(b.Message, "\n")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", short(b.Commit), b.Branch, strings.Join(b.Tags, ","),
			strings.Join(b.Archs, ","), b.PublishedAt.Local().Format(time.DateTime), msg)
	}
	tw.Flush()
	return 0
}
