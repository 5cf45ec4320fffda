package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/meshwork/meshwork/ca"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newCACmd) }

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Inspect the mesh CA, make bootstrap tokens, rotate the root",
	}
	cmd.AddCommand(newCARootsCmd(), newCACertCmd(), newCATokenCmd(), newCARotateCmd(), newCAKeygenCmd())
	return cmd
}

func newCARootsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "roots",
		Short: "Show the trust bundle: the roots every agent trusts, and any rotation in progress",
		Args:  cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	pemOut := cmd.Flags().Bool("pem", false, "print the roots as a PEM bundle only")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		var r ca.RootsResponse
		if _, err := f.client().Do(cmd.Context(), http.MethodGet, ca.APIPathRoots, nil, nil, &r); err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if *pemOut {
			for _, root := range r.Roots {
				if _, err := io.WriteString(out, root.PEM); err != nil {
					return err
				}
			}
			return nil
		}
		return f.print(out, r, func(w io.Writer) {
			fmt.Fprintf(w, "Trust domain:\t%s\n", r.TrustDomain)
			fmt.Fprintln(w, "FINGERPRINT (SHA-256)\tACTIVE\tNOT AFTER\tSUBJECT")
			for _, root := range r.Roots {
				fmt.Fprintf(w, "%s\t%v\t%s\t%s\n", root.Fingerprint, root.Active, root.NotAfter.Format(time.RFC3339), root.Subject)
			}
			if rot := r.Rotation; rot != nil && rot.InProgress {
				fmt.Fprintf(w, "Rotation:\tfrom %s to %s, started %s\n", short(rot.From), short(rot.To), rot.StartedAt.Format(time.RFC3339))
				fmt.Fprintf(w, "Waiting for:\t%d node(s) %s\n", len(rot.Pending), strings.Join(rot.Pending, " "))
			}
		})
	}
	return cmd
}

func newCACertCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Show this agent's certificate: its SPIFFE IDs, expiry and renewal time",
		Args:  cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	pemOut := cmd.Flags().Bool("pem", false, "print the certificate chain as PEM only (never the key)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		var l ca.LeafInfo
		if _, err := f.client().Do(cmd.Context(), http.MethodGet, ca.APIPathLeaf, nil, nil, &l); err != nil {
			return err
		}
		if *pemOut {
			_, err := io.WriteString(cmd.OutOrStdout(), l.Chain)
			return err
		}
		return f.print(cmd.OutOrStdout(), l, func(w io.Writer) {
			for i, id := range l.IDs {
				label := ""
				if i == 0 {
					label = "SPIFFE IDs:"
				}
				fmt.Fprintf(w, "%s\t%s\n", label, id)
			}
			if len(l.Withheld) > 0 {
				fmt.Fprintf(w, "Withheld by policy:\t%s\n", strings.Join(l.Withheld, ", "))
			}
			fmt.Fprintf(w, "Serial:\t%s\n", l.Serial)
			fmt.Fprintf(w, "Issuer:\t%s\n", l.Issuer)
			fmt.Fprintf(w, "Root:\t%s\n", l.Root)
			fmt.Fprintf(w, "Not before:\t%s\n", l.NotBefore.Format(time.RFC3339))
			fmt.Fprintf(w, "Not after:\t%s (in %s)\n", l.NotAfter.Format(time.RFC3339), (time.Duration(l.ExpiresIn) * time.Second).Round(time.Second))
			fmt.Fprintf(w, "Renewal at:\t%s\n", l.RenewAt.Format(time.RFC3339))
		})
	}
	return cmd
}

func newCATokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token NODE",
		Short: "Make a one-time bootstrap token for NODE (on a server agent)",
		Long: "Make a one-time bootstrap token for NODE. The agent on NODE trades it, with a\n" +
			"certificate request for a key it makes itself, for its first certificate; it\n" +
			"renews over mutual TLS after that. A token works once, for that node only, and\n" +
			"expires after --ttl (at most 1h). Only the token is printed, so that it can be\n" +
			"written to the agent's ca.token_file:\n\n" +
			"  meshwork ca token web-1 > web-1.token",
		Args: cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd)
	ttl := cmd.Flags().Duration("ttl", 0, "lifetime of the token (default: the server's, 10m; at most 1h)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		if err := ca.ValidateName("node", args[0]); err != nil {
			return err
		}
		req := ca.TokenRequest{Node: args[0]}
		if *ttl != 0 {
			req.TTL = ttl.String()
		}
		var r ca.TokenResponse
		if _, err := f.client().Do(cmd.Context(), http.MethodPut, ca.APIPathToken, nil, req, &r); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), r, func(w io.Writer) { fmt.Fprintln(w, r.Token) })
	}
	return cmd
}

func newCARotateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Start a root rotation (on a server agent)",
		Long: "Start a root rotation. A new root is added to the trust bundle beside the old one,\n" +
			"with an intermediate cross-signed by the old root, so that no connection fails\n" +
			"while the bundle spreads. Every agent then renews under the new root, and once\n" +
			"every live node holds such a certificate the old root is retired. Follow it with\n" +
			"`meshwork ca roots`.",
		Args: cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		var st ca.RotationStatus
		if _, err := f.client().Do(cmd.Context(), http.MethodPut, ca.APIPathRotate, nil, nil, &st); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), st, func(w io.Writer) {
			fmt.Fprintf(w, "Root rotation started:\tfrom %s\n\tto %s\n", st.From, st.To)
			fmt.Fprintln(w, "Follow it with `meshwork ca roots`.")
		})
	}
	return cmd
}

func newCAKeygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new CA state key (32 bytes, base64) for ca.state_key_file",
		Long: "Print a new random CA state key. It seals the CA's private keys in the\n" +
			"replicated state; every server agent needs the same one in its\n" +
			"ca.state_key_file (mode 0600). Client agents never hold it. Works offline.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := ca.NewStateKey()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), k)
			return err
		},
	}
}

// short abbreviates a fingerprint for text output.
func short(fp string) string {
	if len(fp) > 16 {
		return fp[:16] + "…"
	}
	return fp
}
