package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/meshwork/meshwork/api"
)

func init() { subcommands = append(subcommands, newStatusCmd) }

func newStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show whether the agent is ready to carry traffic, check by check",
		Long: "Show whether the agent is ready to carry the mesh's traffic: joined to the\n" +
			"cluster through gossip, holding a certificate that is valid now, and holding\n" +
			"the policy from the servers. It reads the same checks as the telemetry\n" +
			"listener's /readyz, through the API (GET /v1/agent/ready, agent:read).\n\n" +
			"Exits 0 when the agent is ready and 1 when it is not (or cannot be reached),\n" +
			"so that a script or a health check can wait on it.",
		Example: "  meshwork status\n" +
			"  meshwork status --format json | jq -r '.checks[] | select(.ok | not) | .reason'\n" +
			"  until meshwork status >/dev/null; do sleep 1; done",
		Args: cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		r, err := f.client().Ready(cmd.Context())
		if err != nil {
			return err
		}
		if err := f.print(cmd.OutOrStdout(), r, func(w io.Writer) { printReadiness(w, r) }); err != nil {
			return err
		}
		if !r.Ready {
			return exitError{code: exitFailed}
		}
		return nil
	}
	return cmd
}

func printReadiness(w io.Writer, r *api.Readiness) {
	fmt.Fprintf(w, "ready: %s\n\n", yesNo(r.Ready))
	fmt.Fprintln(w, "CHECK\tOK\tREASON")
	for _, c := range r.Checks {
		fmt.Fprintf(w, "%s\t%s\t%s\n", c.Name, yesNo(c.OK), c.Reason)
	}
}
