package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/api"
	"github.com/spf13/cobra"
)

// clientFlags are the flags every command that talks to an agent shares.
type clientFlags struct {
	httpAddr  string
	format    string
	token     string
	tokenFile string

	secret string // the ACL token's secret, found by validate; "" for none
}

// addClientFlags registers --http-addr, --format, --token and --token-file
// on cmd.
func addClientFlags(cmd *cobra.Command) *clientFlags {
	f := &clientFlags{}
	cmd.Flags().StringVar(&f.httpAddr, "http-addr", "", "address of the agent's HTTP API (default $"+api.AddrEnv+", or "+api.DefaultAddr+")")
	cmd.Flags().StringVar(&f.format, "format", "text", "output format: text or json")
	cmd.Flags().StringVar(&f.token, "token", "", "the secret of the ACL token to send (default $"+api.TokenEnv+"; a flag shows in the process list: prefer --token-file)")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", "", "a file holding the secret of the ACL token to send (default $"+api.TokenFileEnv+")")
	return f
}

// client returns an API client for the configured agent, sending the
// token validate found.
func (f *clientFlags) client() *api.Client {
	addr := f.httpAddr
	if addr == "" {
		addr = os.Getenv(api.AddrEnv)
	}
	return api.NewClient(addr).WithToken(f.secret)
}

// validate checks the flags, and finds the token, before any request is
// made.
func (f *clientFlags) validate() error {
	if f.format != "text" && f.format != "json" {
		return fmt.Errorf("--format %q: want text or json", f.format)
	}
	secret, err := tokenSecret(f.token, f.tokenFile)
	if err != nil {
		return err
	}
	f.secret = secret
	return nil
}

// tokenSecret finds the ACL token to send: --token, else --token-file,
// else $MESHWORK_HTTP_TOKEN, else the file $MESHWORK_HTTP_TOKEN_FILE
// names; "" when none is given. Errors name the source, never the secret.
func tokenSecret(flag, file string) (string, error) {
	if flag != "" && file != "" {
		return "", errors.New("--token and --token-file are both given: give one")
	}
	fromFile := func(what, path string) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		return acl.SecretFromFile(what+" "+path, b)
	}
	switch {
	case flag != "":
		return flag, acl.CheckSecret("--token", flag)
	case file != "":
		return fromFile("--token-file", file)
	}
	if v := os.Getenv(api.TokenEnv); v != "" {
		return v, acl.CheckSecret("$"+api.TokenEnv, v)
	}
	if v := os.Getenv(api.TokenFileEnv); v != "" {
		return fromFile("$"+api.TokenFileEnv, v)
	}
	return "", nil
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
