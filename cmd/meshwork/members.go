package main

import (
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/meshwork/meshwork/api"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newMembersCmd) }

func newMembersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the nodes of the cluster as the agent's gossip layer sees them",
		Args:  cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		members, err := f.client().Members(cmd.Context())
		if err != nil {
			return err
		}
		if members == nil {
			members = []api.Member{}
		}
		return f.print(cmd.OutOrStdout(), members, func(w io.Writer) {
			fmt.Fprintln(w, "NODE\tADDRESS\tSTATUS\tTYPE")
			for _, m := range members {
				addr := m.Addr
				if m.Port != 0 {
					addr = net.JoinHostPort(m.Addr, strconv.Itoa(m.Port))
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", m.Name, addr, m.Status, nodeType(m.Server))
			}
		})
	}
	return cmd
}

func nodeType(server bool) string {
	if server {
		return "server"
	}
	return "client"
}
