package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/meshwork/meshwork/api"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newServicesCmd) }

func newServicesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "services",
		Short: "List, register and deregister the services of the local agent",
	}
	cmd.AddCommand(newServicesListCmd(), newServicesRegisterCmd(), newServicesDeregisterCmd())
	return cmd
}

func newServicesListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the services registered on the agent, with their health",
		Args:  cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		svcs, err := f.client().AgentServices(cmd.Context())
		if err != nil {
			return err
		}
		if svcs == nil {
			svcs = []api.AgentService{}
		}
		return f.print(cmd.OutOrStdout(), svcs, func(w io.Writer) {
			fmt.Fprintln(w, "ID\tNAME\tPORT\tHEALTH\tCHECKS\tSOURCE\tTAGS")
			for _, s := range svcs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.ID, s.Name, portList(s.Port, s.Ports), s.Health,
					len(s.Checks), s.Source, strings.Join(s.Tags, ","))
			}
		})
	}
	return cmd
}

func newServicesRegisterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "register FILE",
		Short: "Register the service defined in FILE (JSON or YAML; - reads stdin)",
		Long: "Register the service defined in FILE, a JSON or YAML document holding one service\n" +
			"definition, as in the agent's configuration. The definition is checked before it is\n" +
			"sent. The agent keeps the registration across restarts.",
		Args: cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		def, err := readServiceFile(cmd.InOrStdin(), args[0])
		if err != nil {
			return err
		}
		if err := f.client().RegisterService(cmd.Context(), def); err != nil {
			return err
		}
		id := def.Normalize().ID
		return f.print(cmd.OutOrStdout(), map[string]string{"registered": id}, func(w io.Writer) {
			fmt.Fprintf(w, "Registered service %q\n", id)
		})
	}
	return cmd
}

// readServiceFile reads and validates one service definition; its errors
// start with the file name.
func readServiceFile(stdin io.Reader, path string) (api.ServiceDefinition, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, api.MaxDefinitionSize+1))
		path = "stdin"
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return api.ServiceDefinition{}, err // *PathError names the file
	}
	def, err := api.DecodeServiceDefinition(data)
	if err != nil {
		return api.ServiceDefinition{}, fmt.Errorf("%s: %w", path, err)
	}
	return def, nil
}

func newServicesDeregisterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "deregister ID",
		Short: "Remove the service with this ID from the agent",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		if err := f.client().DeregisterService(cmd.Context(), args[0]); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), map[string]string{"deregistered": args[0]}, func(w io.Writer) {
			fmt.Fprintf(w, "Deregistered service %q\n", args[0])
		})
	}
	return cmd
}

// portList formats the main port and the named ones: "8080,admin=9090".
func portList(main int, named []api.ServicePort) string {
	var parts []string
	if main != 0 {
		parts = append(parts, fmt.Sprint(main))
	}
	for _, p := range named {
		parts = append(parts, fmt.Sprintf("%s=%d", p.Name, p.Port))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}
