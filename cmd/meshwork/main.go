// Command meshwork is the Meshwork agent and its command-line interface.
// `meshwork agent` runs the agent; every other subcommand talks to a running
// agent through its local HTTP API, or works offline (validate, keygen).
package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/meshwork/meshwork/api"
	"github.com/spf13/cobra"
)

func main() {
	root := newRootCmd()
	cmd, err := root.ExecuteC()
	if cmd == nil {
		cmd = root
	}
	os.Exit(report(cmd, err))
}

// report says what went wrong with a command, unless it has, and returns
// the process's exit status (exit.go).
func report(cmd *cobra.Command, err error) int {
	code := exitCode(err)
	var ee exitError
	if err == nil || errors.As(err, &ee) {
		return code
	}
	w := cmd.ErrOrStderr()
	fmt.Fprintln(w, "meshwork:", errorText(err))
	if code == exitUsage {
		fmt.Fprintf(w, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	if errors.Is(err, api.ErrTimeout) {
		fmt.Fprintf(w, "A longer wait: --timeout or $%s.\n", api.TimeoutEnv)
	}
	return code
}

// errorText is what the CLI prints of err. A refusal by the ACLs (HTTP
// 403) is the agent's own message, plainly, such as
// `permission denied: token lacks service:write on "web"`.
func errorText(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) && ae.Status == http.StatusForbidden {
		return ae.Message
	}
	return err.Error()
}

// subcommands are registered by the files of this package, each adding its own
// command group in an init function, so that no file edits another's.
var subcommands []func() *cobra.Command

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "meshwork",
		Short:         "Meshwork: a service mesh for virtual machines and bare-metal hosts",
		Long:          "Meshwork: a service mesh for virtual machines and bare-metal hosts.\n\n" + exitCodesHelp,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, mk := range subcommands {
		root.AddCommand(mk())
	}
	strictUsage(root)
	return root
}
