package main

import (
	"fmt"
	"io"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/meshwork/meshwork/raftstore"
)

func init() { subcommands = append(subcommands, newOperatorCmd) }

func newOperatorCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Operate the cluster: the Raft peers",
	}
	raft := &cobra.Command{Use: "raft", Short: "Inspect and change the Raft configuration of the servers"}
	raft.AddCommand(newListPeersCmd(), newRemovePeerCmd())
	cmd.AddCommand(raft)
	return cmd
}

func newListPeersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list-peers",
		Short: "List the servers in the Raft configuration, as the leader sees it",
		Args:  cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		var peers []raftstore.Peer
		if _, err := f.client().Do(cmd.Context(), "GET", "/v1/operator/raft/peers", nil, nil, &peers); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), peers, func(w io.Writer) {
			fmt.Fprintln(w, "NODE\tADDRESS\tSTATE\tVOTER")
			for _, p := range peers {
				state := "follower"
				if p.Leader {
					state = "leader"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%v\n", p.ID, p.Address, state, p.Voter)
			}
		})
	}
	return cmd
}

func newRemovePeerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove-peer NODE",
		Short: "Remove a server from the Raft configuration (a dead server autopilot keeps)",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		if _, err := f.client().Do(cmd.Context(), "DELETE", "/v1/operator/raft/peers/"+url.PathEscape(args[0]), nil, nil, nil); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), map[string]string{"removed": args[0]}, func(w io.Writer) {
			fmt.Fprintf(w, "Removed %s from the Raft configuration\n", args[0])
		})
	}
	return cmd
}
