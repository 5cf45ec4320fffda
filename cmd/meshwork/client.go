package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/meshwork/meshwork/api"
	"github.com/spf13/cobra"
)

// clientFlags are the flags every command that talks to an agent shares.
type clientFlags struct {
	httpAddr string
	format   string
}

// addClientFlags registers --http-addr and --format on cmd.
func addClientFlags(cmd *cobra.Command) *clientFlags {
	f := &clientFlags{}
	cmd.Flags().StringVar(&f.httpAddr, "http-addr", "", "address of the agent's HTTP API (default $"+api.AddrEnv+", or "+api.DefaultAddr+")")
	cmd.Flags().StringVar(&f.format, "format", "text", "output format: text or json")
	return f
}

// client returns an API client for the configured agent.
func (f *clientFlags) client() *api.Client {
	addr := f.httpAddr
	if addr == "" {
		addr = os.Getenv(api.AddrEnv)
	}
	return api.NewClient(addr)
}

// validate checks the flags before any request is made.
func (f *clientFlags) validate() error {
	if f.format != "text" && f.format != "json" {
		return fmt.Errorf("--format %q: want text or json", f.format)
	}
	return nil
}

// print writes v as indented JSON when --format json, else calls text with a
// tab-aligned writer.
func (f *clientFlags) print(out io.Writer, v any, text func(w io.Writer)) error {
	if f.format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	text(tw)
	return tw.Flush()
}
