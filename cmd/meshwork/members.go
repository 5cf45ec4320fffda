package main

import (
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshwork/meshwork/api"
)

func init() { subcommands = append(subcommands, newMembersCmd) }

func newMembersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the nodes of the cluster as the agent's gossip layer sees them",
		Long: "List the nodes of the cluster as the agent's gossip layer sees them: alive,\n" +
			"suspect, failed, or left. --detailed adds each node's role, tunnel address,\n" +
			"number of services, record version and meta (its tags, such as the Raft port).",
		Example: "  meshwork members\n" +
			"  meshwork members --http-addr 10.0.0.5:8500 --timeout 5s\n" +
			"  meshwork members --detailed\n" +
			"  meshwork members --format json | jq -r '.[] | select(.status == \"failed\") | .name'",
		Args: cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	detailed := cmd.Flags().Bool("detailed", false, "show every field of each member")
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
			if *detailed {
				printMembersDetailed(w, members)
				return
			}
			fmt.Fprintln(w, "NODE\tADDRESS\tSTATUS\tTYPE")
			for _, m := range members {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", m.Name, gossipAddr(m), m.Status, nodeType(m.Server))
			}
		})
	}
	return cmd
}

func printMembersDetailed(w io.Writer, members []api.Member) {
	fmt.Fprintln(w, "NODE\tGOSSIP\tTUNNEL\tSTATUS\tROLE\tSERVICES\tRECORD\tMETA")
	for _, m := range members {
		tunnel := "-"
		if m.TunnelPort != 0 {
			tunnel = net.JoinHostPort(m.Addr, strconv.Itoa(m.TunnelPort)) + "/udp"
		}
		record := "-"
		if m.RecordVersion != 0 {
			record = strconv.FormatUint(m.RecordVersion, 10)
		}
		meta := make([]string, 0, len(m.Meta))
		for _, k := range slices.Sorted(maps.Keys(m.Meta)) {
			meta = append(meta, k+"="+m.Meta[k])
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", m.Name, gossipAddr(m), tunnel, m.Status, nodeType(m.Server),
			m.Services, record, strings.Join(meta, ","))
	}
}

// gossipAddr is the member's gossip address, host:port when the port is
// known.
func gossipAddr(m api.Member) string {
	if m.Port != 0 {
		return net.JoinHostPort(m.Addr, strconv.Itoa(m.Port))
	}
	return m.Addr
}

func nodeType(server bool) string {
	if server {
		return "server"
	}
	return "client"
}
