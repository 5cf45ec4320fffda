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
	if err := root.Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "meshwork:", errorText(err))
		os.Exit(1)
	}
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

// exitError ends the process with a code and no further message; the command
// has already said what went wrong.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// subcommands are registered by the files of this package, each adding its own
// command group in an init function, so that no file edits another's.
var subcommands []func() *cobra.Command

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "meshwork",
		Short:         "Meshwork: a service mesh for virtual machines and bare-metal hosts",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, mk := range subcommands {
		root.AddCommand(mk())
	}
	return root
}
