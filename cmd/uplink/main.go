// Command uplink serves APK repositories per git ref and manages the
// installations that install from them.
package main

import (
	"fmt"
	"os"
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

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:])
	case "publish":
		return publish(args[1:])
	case "builds":
		return builds(args[1:])
	case "keys":
		return cmdKeys(args[1:], os.Stdout, os.Stderr)
	case "installations":
		return cmdInstallations(args[1:], os.Stdout, os.Stderr)
	case "channel":
		return cmdChannel(args[1:], os.Stdout, os.Stderr)
	case "ops":
		return cmdOps(args[1:], os.Stdout, os.Stderr)
	case "history":
		return cmdHistory(args[1:], os.Stdout, os.Stderr)
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "uplink: unknown command %q\n\n%s", args[0], usage)
	return 2
}
