package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/api"
)

func init() { subcommands = append(subcommands, newACLCmd) }

func newACLCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "acl",
		Short: "Bootstrap the ACL system and manage its tokens and policies",
		Long: "Bootstrap the ACL system and manage its tokens and policies (docs/security.md\n" +
			"has the guide). A token's secret is shown once, when the token is made; listings\n" +
			"show accessor IDs, which name tokens in logs and errors and are not secrets.",
	}
	token := &cobra.Command{Use: "token", Short: "Create, list, read, update and delete ACL tokens"}
	token.AddCommand(newACLTokenCreateCmd(), newACLTokenListCmd(), newACLTokenReadCmd("read", "Show a token by its accessor ID"),
		newACLTokenReadCmd("self", "Show the token this command sends"), newACLTokenUpdateCmd(), newACLTokenDeleteCmd())
	policy := &cobra.Command{Use: "policy", Short: "Create, list, read, update and delete ACL policies"}
	policy.AddCommand(newACLPolicyCreateCmd(), newACLPolicyListCmd(), newACLPolicyReadCmd(), newACLPolicyUpdateCmd(), newACLPolicyDeleteCmd())
	cmd.AddCommand(newACLBootstrapCmd(), newACLSecretCmd(), token, policy)
	return cmd
}

func newACLBootstrapCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Make the first management token (once)",
		Long: "Make the first management token and print its secret, which is shown this once.\n" +
			"The ACL system is bootstrapped once: later runs are refused with the reset index.\n" +
			"If the management token is lost, write that index in the file acl-bootstrap-reset\n" +
			"of the leader's data directory (of every server's, to be safe) and run it again.",
		Args: cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		t, err := f.client().ACLBootstrap(cmd.Context())
		if err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), t, func(w io.Writer) {
			printToken(w, t)
			fmt.Fprintln(w, "\nKeep the secret safe: it is shown only this once. It may do everything.")
		})
	}
	return cmd
}

func newACLSecretCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "secret",
		Short: "Print a new random token secret (offline)",
		Long: "Print a new random token secret, for acl.tokens.initial_management or for\n" +
			"`acl token create --secret-file`, when automation makes its tokens' secrets.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := acl.NewSecret()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), s)
			return nil
		},
	}
}

// printToken writes a token as the text output of the token commands.
func printToken(w io.Writer, t *api.ACLToken) {
	fmt.Fprintf(w, "AccessorID:\t%s\n", t.AccessorID)
	if t.SecretID != "" {
		fmt.Fprintf(w, "SecretID:\t%s\n", t.SecretID)
	}
	fmt.Fprintf(w, "Type:\t%s\n", t.Type)
	if t.Description != "" {
		fmt.Fprintf(w, "Description:\t%s\n", t.Description)
	}
	fmt.Fprintf(w, "Policies:\t%s\n", policyNames(t.Policies))
	if t.ExpirationTime != nil {
		fmt.Fprintf(w, "Expires:\t%s\n", t.ExpirationTime.Format(time.RFC3339))
	}
	if !t.CreateTime.IsZero() {
		fmt.Fprintf(w, "Created:\t%s\n", t.CreateTime.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "Index:\t%d (created at %d)\n", t.ModifyIndex, t.CreateIndex)
}

func policyNames(links []api.ACLPolicyLink) string {
	if len(links) == 0 {
		return "-"
	}
	names := make([]string, len(links))
	for i, l := range links {
		names[i] = l.Name
		if names[i] == "" {
			names[i] = l.ID
		}
	}
	return strings.Join(names, ",")
}

// policyLinks turns --policy values, names or IDs, into links.
func policyLinks(values []string) []api.ACLPolicyLink {
	var out []api.ACLPolicyLink
	for _, v := range values {
		if looksLikeID(v) {
			out = append(out, api.ACLPolicyLink{ID: v})
		} else {
			out = append(out, api.ACLPolicyLink{Name: v})
		}
	}
	return out
}

// looksLikeID reports whether s has the form of a UUID, as IDs have.
func looksLikeID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f'):
			return false
		}
	}
	return true
}

func newACLTokenCreateCmd() *cobra.Command {
	var (
		description, secretFile, accessor string
		policies                          []string
		management                        bool
		ttl                               time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a token and print its secret, once",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().StringVar(&description, "description", "", "what the token is for")
	cmd.Flags().StringSliceVar(&policies, "policy", nil, "a policy the token links, by name or ID (repeat, or separate with commas)")
	cmd.Flags().BoolVar(&management, "management", false, "make a management token, which may do everything")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "the token's lifetime, at least 1m (default: never expires)")
	cmd.Flags().StringVar(&secretFile, "secret-file", "", "a file holding the secret to give the token (automation that makes its own; see `acl secret`)")
	cmd.Flags().StringVar(&accessor, "accessor", "", "the accessor ID to give the token, a UUID (default: a new one)")
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		req := api.ACLTokenRequest{Description: description, Policies: policyLinks(policies), TTL: api.Duration(ttl), AccessorID: accessor}
		if management {
			if len(policies) > 0 {
				return errors.New("--management and --policy: a management token may do everything and links no policies")
			}
			req.Type = string(acl.TypeManagement)
		}
		if secretFile != "" {
			b, err := os.ReadFile(secretFile)
			if err != nil {
				return fmt.Errorf("--secret-file: %w", err)
			}
			if req.SecretID, err = acl.SecretFromFile("--secret-file "+secretFile, b); err != nil {
				return err
			}
		}
		t, err := f.client().ACLTokenCreate(cmd.Context(), req)
		if err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), t, func(w io.Writer) {
			printToken(w, t)
		})
	}
	return cmd
}

func newACLTokenListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tokens, by accessor ID (never their secrets)",
		Args:  cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		list, err := f.client().ACLTokenList(cmd.Context())
		if err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), list, func(w io.Writer) {
			fmt.Fprintln(w, "ACCESSOR\tTYPE\tPOLICIES\tEXPIRES\tDESCRIPTION")
			for _, t := range list {
				exp := "never"
				if t.ExpirationTime != nil {
					exp = t.ExpirationTime.Format(time.RFC3339)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.AccessorID, t.Type, policyNames(t.Policies), exp, t.Description)
			}
		})
	}
	return cmd
}

// newACLTokenReadCmd makes `token read ACCESSOR` and `token self`.
func newACLTokenReadCmd(name, short string) *cobra.Command {
	cmd := &cobra.Command{Use: name, Short: short, Args: cobra.NoArgs}
	if name == "read" {
		cmd.Use, cmd.Args = "read ACCESSOR", cobra.ExactArgs(1)
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		var (
			t   *api.ACLToken
			err error
		)
		if name == "read" {
			t, err = f.client().ACLTokenRead(cmd.Context(), args[0])
		} else {
			t, err = f.client().ACLTokenSelf(cmd.Context())
		}
		if err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), t, func(w io.Writer) { printToken(w, t) })
	}
	return cmd
}

func newACLTokenUpdateCmd() *cobra.Command {
	var (
		description string
		policies    []string
	)
	cmd := &cobra.Command{
		Use:   "update ACCESSOR",
		Short: "Change a token's description or policies (its secret, type and expiry never change)",
		Long: "Change a token's description (--description) or replace its policies (--policy,\n" +
			"or --policy '' for none). What is not given stays. The token is read first, and the\n" +
			"change is refused if someone else changed it in between.",
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&description, "description", "", "the new description")
	cmd.Flags().StringSliceVar(&policies, "policy", nil, "the policies to link instead, by name or ID")
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		c := f.client()
		cur, err := c.ACLTokenRead(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		req := api.ACLTokenRequest{Description: cur.Description, Policies: cur.Policies}
		if cmd.Flags().Changed("description") {
			req.Description = description
		}
		if cmd.Flags().Changed("policy") {
			var named []string
			for _, p := range policies {
				if p != "" {
					named = append(named, p)
				}
			}
			req.Policies = policyLinks(named)
		}
		t, err := c.ACLTokenUpdate(cmd.Context(), args[0], req, &api.ACLWriteOptions{CAS: cur.ModifyIndex})
		if err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), t, func(w io.Writer) { printToken(w, t) })
	}
	return cmd
}

func newACLTokenDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "delete ACCESSOR", Short: "Delete a token", Args: cobra.ExactArgs(1)}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		if err := f.client().ACLTokenDelete(cmd.Context(), args[0], nil); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), map[string]string{"deleted": args[0]}, func(w io.Writer) {
			fmt.Fprintf(w, "Token %s deleted\n", args[0])
		})
	}
	return cmd
}

// readACLPolicy reads a policy document (YAML or JSON; - reads stdin) and
// checks it as the agent will, naming the file and line of a problem.
func readACLPolicy(stdin io.Reader, path string) (api.ACLPolicy, error) {
	if path == "" {
		return api.ACLPolicy{}, errors.New("-f FILE|- is required")
	}
	var (
		data []byte
		err  error
	)
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, acl.MaxPolicyBytes+1))
		path = "stdin"
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return api.ACLPolicy{}, err
	}
	p, err := acl.ParsePolicy(data)
	if err != nil {
		return api.ACLPolicy{}, fmt.Errorf("%s: %w", path, err)
	}
	return api.ACLPolicy{Name: p.Name, Description: p.Description, Rules: p.Rules}, nil
}

func printPolicy(w io.Writer, p *api.ACLPolicy) {
	fmt.Fprintf(w, "ID:\t%s\nName:\t%s\n", p.ID, p.Name)
	if p.Description != "" {
		fmt.Fprintf(w, "Description:\t%s\n", p.Description)
	}
	fmt.Fprintf(w, "Index:\t%d (created at %d)\n", p.ModifyIndex, p.CreateIndex)
}

func newACLPolicyCreateCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "create -f FILE|-",
		Short: "Create a policy from a YAML or JSON document",
		Long: "Create a policy from a document such as\n\n" +
			"  name: web-deploy\n  description: CI deploys the web service\n  rules:\n" +
			"    service: {web: write}\n    service_prefix: {\"\": read}\n",
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the policy document, or - for stdin (required)")
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		p, err := readACLPolicy(cmd.InOrStdin(), file)
		if err != nil {
			return err
		}
		out, err := f.client().ACLPolicyCreate(cmd.Context(), p)
		if err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), out, func(w io.Writer) { printPolicy(w, out) })
	}
	return cmd
}

func newACLPolicyListCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "list", Short: "List the policies", Args: cobra.NoArgs}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		list, err := f.client().ACLPolicyList(cmd.Context())
		if err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), list, func(w io.Writer) {
			fmt.Fprintln(w, "ID\tNAME\tDESCRIPTION")
			for _, p := range list {
				fmt.Fprintf(w, "%s\t%s\t%s\n", p.ID, p.Name, p.Description)
			}
		})
	}
	return cmd
}

func newACLPolicyReadCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "read NAME|ID",
		Short: "Show a policy as a document that `policy update -f` takes back",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		p, err := f.client().ACLPolicyRead(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		if f.format == "json" {
			return f.print(cmd.OutOrStdout(), p, nil)
		}
		doc := struct {
			Name        string    `yaml:"name"`
			Description string    `yaml:"description,omitempty"`
			Rules       acl.Rules `yaml:"rules"`
		}{p.Name, p.Description, p.Rules}
		fmt.Fprintf(cmd.OutOrStdout(), "# id: %s, modify index %d\n", p.ID, p.ModifyIndex)
		enc := yaml.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent(2)
		if err := enc.Encode(doc); err != nil {
			return err
		}
		return enc.Close()
	}
	return cmd
}

func newACLPolicyUpdateCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "update NAME|ID -f FILE|-",
		Short: "Replace a policy with a YAML or JSON document (it may rename it)",
		Args:  cobra.ExactArgs(1),
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the policy document, or - for stdin (required)")
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		p, err := readACLPolicy(cmd.InOrStdin(), file)
		if err != nil {
			return err
		}
		out, err := f.client().ACLPolicyUpdate(cmd.Context(), args[0], p, nil)
		if err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), out, func(w io.Writer) { printPolicy(w, out) })
	}
	return cmd
}

func newACLPolicyDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete NAME|ID",
		Short: "Delete a policy (refused while tokens link it)",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		if err := f.client().ACLPolicyDelete(cmd.Context(), args[0], nil); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), map[string]string{"deleted": args[0]}, func(w io.Writer) {
			fmt.Fprintf(w, "Policy %s deleted\n", args[0])
		})
	}
	return cmd
}
