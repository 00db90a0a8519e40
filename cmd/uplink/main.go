// Command uplink serves APK repositories per git ref and manages the
// installations that install from them.
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
	"strings"
	"syscall"

	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/server"
)

const usage = `uplink: APK repositories per git ref

usage:
  uplink serve [flags]                        run the server
  uplink publish <dir> --app <org>/<app> --commit <sha> --branch <b>
                                              upload a built repository (<dir>/<arch>/...) and publish it
  uplink builds <org>/<app> [--branch b]      list builds, newest first
  uplink keys add|list|rm <org>/<app> ...     the keys an app's indexes must be signed with
  uplink installations [<name>]               list installations, or show one
  uplink channel <installation> --commit <sha> | --tag <t> | --branch <b> [--no-wait]
                                              change an installation's channel and follow the operation
  uplink ops watch <id>                       follow an operation until it ends
  uplink ops show <id>                        show an operation: its steps and log
  uplink ops list <installation>              list an installation's operations, newest first
  uplink history <installation>               list an installation's channel changes

Run 'uplink <command> -h' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

// commands are the subcommands of uplink, each given its arguments and
// where to write.
var commands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"serve":         func(args []string, _, _ io.Writer) int { return serve(args) },
	"publish":       cmdPublish,
	"builds":        cmdBuilds,
	"keys":          cmdKeys,
	"installations": cmdInstallations,
	"channel":       cmdChannel,
	"ops":           cmdOps,
	"history":       cmdHistory,
	"healthcheck":   cmdHealthcheck,
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	if cmd, ok := commands[args[0]]; ok {
		return cmd(args[1:], os.Stdout, os.Stderr)
	}
	switch args[0] {
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "uplink: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// clientFlags are what every API command needs.
type clientFlags struct {
	addr, token, dataDir string
	json                 bool
}

// newAPIFlagSet is newFlagSet with the flags every API command takes.
func newAPIFlagSet(name, usage string) (*flag.FlagSet, *clientFlags) {
	fs, c := newFlagSet(name, usage), &clientFlags{}
	c.register(fs)
	return fs, c
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

// connect is how every API command starts calling: the client, and a
// context that ends on SIGINT or SIGTERM (stop releases it).
func (c *clientFlags) connect() (ctx context.Context, cl *client.Client, stop context.CancelFunc, err error) {
	cl, err = c.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, stop = signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	return ctx, cl, stop, nil
}

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

func fail(w io.Writer, err error) int {
	fmt.Fprintln(w, "uplink:", err)
	return 1
}

// printOne prints v as JSON with --json, else as text writes it.
func printOne[T any](w io.Writer, jsonOut bool, v T, text func(io.Writer, T)) {
	if jsonOut {
		printJSON(w, v)
		return
	}
	text(w, v)
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// subcommand is one of a command's subcommands and what arguments it
// takes, e.g. {"add", "<org>/<app> <file.rsa.pub>"}.
type subcommand struct{ name, args string }

// parseSubcommand is parseCommand for a command of subcommands: it splits
// the positional arguments into one of subs and its arguments, or prints
// why it cannot (ok false: exit with code).
func parseSubcommand(fs *flag.FlagSet, args []string, stdout, stderr io.Writer, subs ...subcommand) (sub string, rest []string, code int, ok bool) {
	pos, code, ok := parseCommand(fs, args, stdout, stderr)
	if !ok {
		return "", nil, code, false
	}
	names := make([]string, len(subs))
	for i, s := range subs {
		names[i] = s.name
	}
	choice := strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
	if len(pos) == 0 {
		return "", nil, usageError(fs, stderr, "name a subcommand: "+choice), false
	}
	sub, rest = pos[0], pos[1:]
	for _, s := range subs {
		if s.name != sub {
			continue
		}
		if n := len(strings.Fields(s.args)); len(rest) != n {
			plural := "s"
			if n == 1 {
				plural = ""
			}
			why := fmt.Sprintf("%s %s takes %d argument%s (%s), got %d", fs.Name(), sub, n, plural, s.args, len(rest))
			return "", nil, usageError(fs, stderr, why), false
		}
		return sub, rest, 0, true
	}
	return "", nil, usageError(fs, stderr, fmt.Sprintf("unknown subcommand %q (%s)", sub, choice)), false
}
