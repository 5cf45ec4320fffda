package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/api"
	"github.com/spf13/cobra"
)

// clientFlags are the flags every command that talks to an agent shares.
type clientFlags struct {
	cmd       *cobra.Command
	httpAddr  string
	format    string
	token     string
	tokenFile string
	timeout   time.Duration
	// defaultTimeout replaces api.DefaultTimeout for a command whose
	// requests take long (a snapshot); 0 keeps it.
	defaultTimeout time.Duration

	secret string // the ACL token's secret, found by validate; "" for none
}

// addClientFlags registers --http-addr, --format, --token, --token-file
// and --timeout on cmd.
func addClientFlags(cmd *cobra.Command) *clientFlags {
	f := &clientFlags{cmd: cmd}
	cmd.Flags().StringVar(&f.httpAddr, "http-addr", "", "address of the agent's HTTP API (default $"+api.AddrEnv+", or "+api.DefaultAddr+")")
	cmd.Flags().StringVar(&f.format, "format", "text", "output format: text or json")
	cmd.Flags().StringVar(&f.token, "token", "", "the secret of the ACL token to send (default $"+api.TokenEnv+"; a flag shows in the process list: prefer --token-file)")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", "", "a file holding the secret of the ACL token to send (default $"+api.TokenFileEnv+")")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 0, "how long to wait for the agent's answer, on top of a blocking query's wait (default $"+api.TimeoutEnv+", or "+api.DefaultTimeout.String()+")")
	return f
}

// client returns an API client for the configured agent, sending the
// token validate found and giving up after the timeout validate chose.
func (f *clientFlags) client() *api.Client {
	addr := f.httpAddr
	if addr == "" {
		addr = os.Getenv(api.AddrEnv)
	}
	return api.NewClient(addr).WithToken(f.secret).WithTimeout(f.timeout)
}

// validate checks the flags, and finds the token and the timeout, before
// any request is made. A wrong flag is a usage error.
func (f *clientFlags) validate() error {
	if f.format != "text" && f.format != "json" {
		return usageErrorf("--format %q: want text or json", f.format)
	}
	timeout, err := requestTimeout(f.cmd.Flags().Changed("timeout"), f.timeout, f.defaultTimeout)
	if err != nil {
		return err
	}
	f.timeout = timeout
	secret, err := tokenSecret(f.token, f.tokenFile)
	if err != nil {
		return err
	}
	f.secret = secret
	return nil
}

// requestTimeout is --timeout when given, else $MESHWORK_HTTP_TIMEOUT,
// else def (api.DefaultTimeout when 0). It must be positive: a script
// that waits for ever on a hung agent is what the timeout prevents.
func requestTimeout(given bool, flag, def time.Duration) (time.Duration, error) {
	if given {
		if flag <= 0 {
			return 0, usageErrorf("--timeout %s: want a positive duration such as 30s", flag)
		}
		return flag, nil
	}
	if v := os.Getenv(api.TimeoutEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, usageErrorf("$%s %q: want a positive duration such as 30s", api.TimeoutEnv, v)
		}
		return d, nil
	}
	if def > 0 {
		return def, nil
	}
	return api.DefaultTimeout, nil
}

// tokenSecret finds the ACL token to send: --token, else --token-file,
// else $MESHWORK_HTTP_TOKEN, else the file $MESHWORK_HTTP_TOKEN_FILE
// names; "" when none is given. Errors name the source, never the secret.
func tokenSecret(flag, file string) (string, error) {
	if flag != "" && file != "" {
		return "", usageErrorf("--token and --token-file are both given: give one")
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
		if err := acl.CheckSecret("--token", flag); err != nil {
			return "", usageError{err}
		}
		return flag, nil
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
