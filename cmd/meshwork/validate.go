package main

import (
	"fmt"
	"os"

	"github.com/meshwork/meshwork/agent/config"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newValidateCmd) }

func newValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE|DIR...",
		Short: "Check a configuration without starting the agent",
		Long: `Check configuration files and directories as the agent would read them,
merged in the order given, without starting anything. Exits 0 when the
configuration is valid, and 1 with every problem, each naming its file, line
and key, when it is not. Ansible's template module runs it as "validate:".
A file that holds a secret (encrypt, cluster_key, server_key, an ACL token,
a key or token file) and that users other than its owner and the meshwork
group can read is named in a warning on standard error; the configuration is
still valid.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var files, dirs []string
			for _, a := range args {
				st, err := os.Stat(a)
				if err == nil && st.IsDir() {
					dirs = append(dirs, a)
				} else {
					files = append(files, a)
				}
			}
			l, err := config.LoadAndValidate(files, dirs, nil)
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				return exitError{code: 1}
			}
			for _, w := range l.SecretWarnings() {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "configuration is valid")
			return nil
		},
	}
}
