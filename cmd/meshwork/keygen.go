package main

import (
	"fmt"

	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newKeygenCmd) }

func newKeygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new random gossip encryption key (32 bytes, base64)",
		Long: "Print a new random gossip encryption key (32 bytes, AES-256, base64).\n" +
			"Put it in the agents' configuration (encrypt) before the first start, or\n" +
			"roll it out on a running cluster with `meshwork keyring install`, `use`, `remove`.\n" +
			"Works offline.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := gossip.GenerateKey()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), key)
			return err
		},
	}
}
