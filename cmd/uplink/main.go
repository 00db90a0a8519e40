// Command uplink serves APK repositories per git ref and manages the
// installations that install from them.
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/uplinkhq/uplink/internal/client"
	"github.com/uplinkhq/uplink/internal/server"
	"github.com/uplinkhq/uplink/internal/version"
)

// The exit codes of every command (docs/api.md, "Command line").
const (
	exitFailed      = 1 // an operation failed, the server refused a request
	exitUsage       = 2 // a bad command line, flag or UPLINK_* variable
	exitBusy        = 3 // 409 operation_running: another operation of the installation runs
	exitUnreachable = 4 // the server could not be reached
)

const rootLong = `uplink: APK repositories per git ref.

uplink serve runs the server; the other commands talk to its admin API
(--addr, --token, --cacert). Every flag can also be set as UPLINK_<FLAG>
(upper case, - as _); the command line wins.

exit codes:
  0  ok
  1  failed: an operation failed, or the server refused the request
  2  usage: a bad command line, flag or UPLINK_* variable
  3  busy: another operation of the installation runs (409 operation_running)
  4  unreachable: no connection to the server (refused, DNS, TLS: try --cacert)`

// usageTemplate keeps the wording of the hand-written usage cobra
// replaced: "usage: uplink <command> ...", then the flags.
const usageTemplate = `usage: {{.UseLine}}{{if .HasAvailableSubCommands}}

commands:{{range .Commands}}{{if (or .IsAvailableCommand (eq .Name "help"))}}
  {{rpad .Name .NamePadding }} {{.Short}}{{end}}{{end}}{{end}}{{if .HasAvailableLocalFlags}}

flags (each also read from UPLINK_<FLAG> in the environment):
{{.LocalFlags.FlagUsages | trimTrailingWhitespaces}}{{end}}{{if .HasAvailableInheritedFlags}}

global flags (before or after the command; also UPLINK_<FLAG>):
{{.InheritedFlags.FlagUsages | trimTrailingWhitespaces}}{{end}}{{if .HasAvailableSubCommands}}

Run 'uplink help <command>' or 'uplink <command> --help' for a command's flags.{{end}}
`

func main() {
	os.Exit(run(os.Args[1:]))
}

// run runs a command line on the process's standard output and error.
func run(args []string) int { return execute(args, os.Stdout, os.Stderr) }

// commands parse their own arguments (a std flag.FlagSet with
// UPLINK_<FLAG> fallbacks): each becomes a cobra command that passes its
// arguments through.
var commands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"serve":       serveCommand,
	"healthcheck": cmdHealthcheck,
}

// shortHelp describes the commands of commands in `uplink --help`.
var shortHelp = map[string]string{
	"serve":       "run the server",
	"healthcheck": "exit 0 when the server's /readyz answers 200 (a container's HEALTHCHECK)",
}

// exitError ends a command with its exit code; what went wrong is
// already printed.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// execute runs a command line and returns its exit code. An error cobra
// itself returns (an unknown command or flag, wrong arguments) is a usage
// error: the reason and the command's usage go to stderr, exit 2.
func execute(args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr}
	root := c.root()
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	var ex exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ex):
		return int(ex)
	}
	if cmd == nil {
		cmd = root
	}
	return c.usageError(cmd, err.Error())
}

// cli is one run of the command line: where it writes, and the global
// flags.
type cli struct {
	stdout, stderr io.Writer
	g              clientFlags
}

func (c *cli) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "uplink <command>",
		Short:         "APK repositories per git ref",
		Long:          rootLong,
		Version:       version.String(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.ArbitraryArgs,
		RunE: c.runs(func(cmd *cobra.Command, args []string) int {
			if len(args) > 0 {
				return c.usageError(cmd, fmt.Sprintf("unknown command %q", args[0]))
			}
			return c.usageError(cmd, "name a command")
		}),
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.DisableFlagParsing {
				return nil
			}
			if err := envDefaults(cmd.Flags()); err != nil {
				return err
			}
			return c.g.loadCACert()
		},
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetUsageTemplate(usageTemplate)
	root.SetVersionTemplate("{{.Version}}\n")
	c.g.register(root.PersistentFlags())
	root.AddCommand(c.publishCmd(), c.buildsCmd(), c.keysCmd(), c.installationsCmd(), c.channelCmd(),
		c.opsCmd(), c.historyCmd(), c.tagsCmd(), c.branchesCmd(), c.pruneCmd(), c.versionCmd())
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		root.AddCommand(c.passThrough(name, commands[name]))
	}
	return root
}

// passThrough wraps a command that parses its own flags.
func (c *cli) passThrough(name string, f func(args []string, stdout, stderr io.Writer) int) *cobra.Command {
	cmd := &cobra.Command{
		Use:                name + " [flags]",
		Short:              shortHelp[name],
		DisableFlagParsing: true,
		RunE: c.runs(func(_ *cobra.Command, args []string) int {
			return f(args, c.stdout, c.stderr)
		}),
	}
	cmd.SetHelpFunc(func(*cobra.Command, []string) { f([]string{"-h"}, c.stdout, c.stderr) })
	return cmd
}

// runs makes a cobra RunE of a function that returns an exit code.
func (c *cli) runs(f func(cmd *cobra.Command, args []string) int) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if code := f(cmd, args); code != 0 {
			return exitError(code)
		}
		return nil
	}
}

// usageError prints why a command line is wrong and the command's usage
// on stderr; exit 2.
func (c *cli) usageError(cmd *cobra.Command, why string) int {
	fmt.Fprintf(c.stderr, "%s: %s\n\n%s", cmd.CommandPath(), why, cmd.UsageString())
	return exitUsage
}

// envDefaults sets each flag the command line left unset from its
// UPLINK_<FLAG> variable, so that the command line wins and a list flag
// given there replaces the environment's list.
func envDefaults(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" || f.Name == "version" {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", envName(f.Name), v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// exactArgs wants the positional arguments names lists, e.g.
// "<org>/<app> <tag>".
func exactArgs(names string) cobra.PositionalArgs {
	n := len(strings.Fields(names))
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		plural := "s"
		if n == 1 {
			plural = ""
		}
		name := strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
		return fmt.Errorf("%s takes %d argument%s (%s), got %d", name, n, plural, names, len(args))
	}
}

// parent is a command of subcommands only: run alone or with an unknown
// subcommand, it is a usage error.
func (c *cli) parent(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Args: cobra.ArbitraryArgs}
	cmd.RunE = c.runs(func(cmd *cobra.Command, args []string) int {
		names := make([]string, len(subs))
		for i, s := range subs {
			names[i] = s.Name()
		}
		choice := strings.Join(names, ", ")
		if i := strings.LastIndex(choice, ", "); i >= 0 {
			choice = choice[:i] + " or " + choice[i+2:]
		}
		if len(args) == 0 {
			return c.usageError(cmd, "name a subcommand: "+choice)
		}
		return c.usageError(cmd, fmt.Sprintf("unknown subcommand %q (%s)", args[0], choice))
	})
	cmd.AddCommand(subs...)
	return cmd
}

// clientFlags are the global flags of every API command.
type clientFlags struct {
	addr, token, dataDir, caCert string
	json                         bool
	caPEM                        []byte
}

func (c *clientFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&c.addr, "addr", "http://127.0.0.1:4040", "admin API address (https://... for a TLS admin listener)")
	fs.StringVar(&c.token, "token", "", "admin bearer token (UPLINK_ADMIN_TOKEN too; default: read from <data-dir>/"+server.TokenFile+")")
	fs.StringVar(&c.dataDir, "data-dir", "./uplink-data", "where a locally running uplink keeps its generated token")
	fs.StringVar(&c.caCert, "cacert", "", "PEM file of a CA to trust for an https --addr (a private CA)")
	fs.BoolVar(&c.json, "json", false, "print JSON")
}

// loadCACert reads --cacert, so that a bad file is a usage error before
// anything is sent.
func (c *clientFlags) loadCACert() error {
	if c.caCert == "" {
		return nil
	}
	b, err := os.ReadFile(c.caCert)
	if err != nil {
		return fmt.Errorf("--cacert: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return fmt.Errorf("--cacert %s: no PEM certificate in it", c.caCert)
	}
	c.caPEM = b
	return nil
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
	cl := client.New(c.addr, token)
	if c.caPEM != nil {
		if err := cl.TrustCA(c.caPEM); err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
	}
	return cl, nil
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

// fail prints err (and what still uses what a delete was refused for);
// its exit code says what kind of failure it is.
func fail(w io.Writer, err error) int {
	fmt.Fprintln(w, "uplink:", err)
	var ce *client.Error
	if errors.As(err, &ce) {
		for _, u := range ce.UsedBy {
			fmt.Fprintln(w, "  used by", u)
		}
	}
	if client.Unreachable(err) && strings.Contains(err.Error(), "certificate") {
		fmt.Fprintln(w, "uplink: to trust a private CA, pass --cacert <file> (UPLINK_CACERT)")
	}
	return exitCode(err)
}

// exitCode is 3 for a busy installation, 4 when the server could not be
// reached, else 1.
func exitCode(err error) int {
	var ce *client.Error
	switch {
	case errors.As(err, &ce) && ce.Busy():
		return exitBusy
	case client.Unreachable(err):
		return exitUnreachable
	}
	return exitFailed
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
