package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/meshwork/meshwork/api"
)

func init() { subcommands = append(subcommands, newMaintCmd) }

func newMaintCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "maint",
		Short: "Take this node, or one of its services, out of service while it is worked on",
		Long: `Take this node, or one of its services, out of service while it is worked on.

In maintenance, the node's services (or the one service) are shown as
critical, with a check named _node_maintenance (or
_service_maintenance:<id>) that carries the reason: DNS leaves them out of
its answers and other nodes' tunnels out of their pools. Connections already
open are not cut. The mode survives a restart of the agent: it ends only
with "meshwork maint disable".

With no subcommand, "meshwork maint" shows what is in maintenance.`,
		Example: `  meshwork maint enable --reason "kernel upgrade, ticket OPS-42"
  meshwork maint enable --service web-1 --reason "reindexing"
  meshwork maint
  meshwork maint disable --service web-1
  meshwork maint disable`,
		Args: cobra.ArbitraryArgs,
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return unknownSubcommand(cmd, args)
		}
		if err := f.validate(); err != nil {
			return err
		}
		st, err := f.client().Maintenance(cmd.Context())
		if err != nil {
			return err
		}
		return printMaintenance(f, cmd.OutOrStdout(), st)
	}
	cmd.AddCommand(newMaintSetCmd(true), newMaintSetCmd(false))
	return cmd
}

func newMaintSetCmd(on bool) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "enable",
		Short: "Put the node, or with --service one service, in maintenance",
		Args:  cobra.NoArgs,
		Example: `  meshwork maint enable --reason "replacing a disk"
  meshwork maint enable --service web-1`,
	}
	if !on {
		cmd.Use, cmd.Short = "disable", "Take the node, or with --service one service, out of maintenance"
		cmd.Example = "  meshwork maint disable\n  meshwork maint disable --service web-1"
	}
	f := addClientFlags(cmd)
	service := cmd.Flags().String("service", "", "the ID of a service of this agent, instead of the whole node")
	var reason *string
	if on {
		reason = cmd.Flags().String("reason", "", "why, shown in the maintenance check's output")
	} else {
		reason = new(string)
	}
	cmd.ValidArgsFunction = cobra.NoFileCompletions
	_ = cmd.RegisterFlagCompletionFunc("service", completeLocalServiceIDs)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		c := f.client()
		var st api.MaintenanceStatus
		var err error
		if *service != "" {
			st, err = c.ServiceMaintenance(cmd.Context(), *service, on, *reason)
		} else {
			st, err = c.NodeMaintenance(cmd.Context(), on, *reason)
		}
		if err != nil {
			return err
		}
		if f.format == "json" {
			return printMaintenance(f, cmd.OutOrStdout(), st)
		}
		what := "this node"
		if *service != "" {
			what = "service " + *service
		}
		state := "out of"
		if on {
			state = "in"
		}
		fmt.Fprintf(cmd.OutOrStdout(), "Put %s %s maintenance\n", what, state)
		return nil
	}
	return cmd
}

func printMaintenance(f *clientFlags, out io.Writer, st api.MaintenanceStatus) error {
	return f.print(out, st, func(w io.Writer) {
		if st.Node == nil && len(st.Services) == 0 {
			fmt.Fprintln(w, "Nothing is in maintenance")
			return
		}
		fmt.Fprintln(w, "WHAT\tSINCE\tREASON")
		if st.Node != nil {
			fmt.Fprintf(w, "node\t%s\t%s\n", st.Node.Since, st.Node.Reason)
		}
		for _, s := range st.Services {
			fmt.Fprintf(w, "service %s\t%s\t%s\n", s.ServiceID, s.Since, s.Reason)
		}
	})
}
