package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/meshwork/meshwork/api"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newCatalogCmd) }

func newCatalogCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "catalog",
		Short: "Read the service catalog as the agent holds it",
	}
	cmd.AddCommand(newCatalogServicesCmd(), newCatalogNodesCmd(), newCatalogServiceCmd())
	return cmd
}

func newCatalogServicesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "services",
		Short: "List the service names of the catalog, with their instance counts",
		Args:  cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		sums, _, err := f.client().CatalogServices(cmd.Context(), nil)
		if err != nil {
			return err
		}
		if sums == nil {
			sums = []api.CatalogServiceSummary{}
		}
		return f.print(cmd.OutOrStdout(), sums, func(w io.Writer) {
			fmt.Fprintln(w, "SERVICE\tINSTANCES\tPASSING\tTAGS")
			for _, s := range sums {
				fmt.Fprintf(w, "%s\t%d\t%d\t%s\n", s.Name, s.Instances, s.Passing, strings.Join(s.Tags, ","))
			}
		})
	}
	return cmd
}

func newCatalogNodesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the nodes of the catalog",
		Args:  cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		nodes, _, err := f.client().CatalogNodes(cmd.Context(), nil)
		if err != nil {
			return err
		}
		if nodes == nil {
			nodes = []api.Node{}
		}
		return f.print(cmd.OutOrStdout(), nodes, func(w io.Writer) {
			fmt.Fprintln(w, "NODE\tADDRESS\tSTATUS\tTYPE\tSERVICES")
			for _, n := range nodes {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\n", n.Name, n.Addr, n.Status, nodeType(n.Server), n.Services)
			}
		})
	}
	return cmd
}

func newCatalogServiceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service NAME",
		Short: "List the instances of one service on every node",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd)
	var tag string
	var passing bool
	cmd.Flags().StringVar(&tag, "tag", "", "only instances carrying this tag")
	cmd.Flags().BoolVar(&passing, "passing", false, "only instances that take traffic (passing, on a reachable node)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		entries, _, err := f.client().CatalogService(cmd.Context(), args[0], &api.QueryOptions{Tag: tag})
		if err != nil {
			return err
		}
		out := []api.CatalogServiceEntry{}
		for _, e := range entries {
			if !passing || e.Passing {
				out = append(out, e)
			}
		}
		return f.print(cmd.OutOrStdout(), out, func(w io.Writer) {
			fmt.Fprintln(w, "NODE\tID\tADDRESS\tPORT\tHEALTH\tNODE STATUS\tTAGS")
			for _, e := range out {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Node, e.ServiceID, e.Address, portList(e.Port, e.Ports),
					e.Health, e.NodeStatus, strings.Join(e.Tags, ","))
			}
		})
	}
	return cmd
}
