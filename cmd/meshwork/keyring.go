package main

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newKeyringCmd) }

func newKeyringCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keyring",
		Short: "List and rotate the gossip encryption keys of the whole cluster",
		Long: "List and rotate the gossip encryption keys of every live member.\n\n" +
			"To rotate without downtime: `meshwork keygen` for a new key, then\n" +
			"`keyring install KEY` (every member can now decrypt it), `keyring use KEY`\n" +
			"(every member encrypts with it), `keyring remove OLDKEY`. Each step reports\n" +
			"the members that failed or did not answer; repeat it until none does.\n\n" +
			"The agent never shows a key: listings name each by its fingerprint, which\n" +
			"`keyring fingerprint KEY` computes from a key you hold.\n\n" +
			"KEY may be - to read the key from standard input, so that it does not\n" +
			"show in the process list:\n\n" +
			"  meshwork keyring install - < new.key",
	}
	cmd.AddCommand(
		newKeyringListCmd(),
		newKeyringFingerprintCmd(),
		newKeyringOpCmd("install", "PUT", gossip.KeyringInstallPath, "Install a key on every member (they keep encrypting with their primary key)", "installed on"),
		newKeyringOpCmd("use", "PUT", gossip.KeyringUsePath, "Make an installed key the primary key of every member", "primary on"),
		newKeyringOpCmd("remove", "DELETE", gossip.KeyringPath, "Remove a key from every member (not the primary key)", "removed from"),
	)
	return cmd
}

func newKeyringListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the fingerprints of every member's keys, with how many members have each",
		Args:  cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		var resp gossip.KeyringResponse
		if _, err := f.client().Do(cmd.Context(), "GET", gossip.KeyringPath, nil, nil, &resp); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), &resp, func(w io.Writer) {
			fmt.Fprintln(w, "FINGERPRINT\tINSTALLED\tPRIMARY")
			keys := make([]string, 0, len(resp.Keys))
			for k := range resp.Keys {
				keys = append(keys, k)
			}
			sort.Slice(keys, func(i, j int) bool {
				if resp.PrimaryKeys[keys[i]] != resp.PrimaryKeys[keys[j]] {
					return resp.PrimaryKeys[keys[i]] > resp.PrimaryKeys[keys[j]]
				}
				return keys[i] < keys[j]
			})
			for _, k := range keys {
				fmt.Fprintf(w, "%s\t%d/%d\t%d/%d\n", k, resp.Keys[k], resp.NumNodes, resp.PrimaryKeys[k], resp.NumNodes)
			}
			printKeyringErrors(w, &resp)
		})
	}
	return cmd
}

func newKeyringFingerprintCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "fingerprint KEY",
		Short: "Print the fingerprint of a key, as keyring list names it (offline; KEY - reads standard input)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := keyArg(cmd, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), gossip.KeyFingerprint(key))
			return nil
		},
	}
}

func newKeyringOpCmd(name, method, path, short, done string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   name + " KEY",
		Short: short + "; KEY - reads standard input",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		key, err := keyArg(cmd, args[0])
		if err != nil {
			return err
		}
		var resp gossip.KeyringResponse
		body := gossip.KeyRequest{Key: key}
		if _, err := f.client().Do(cmd.Context(), method, path, nil, &body, &resp); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), &resp, func(w io.Writer) {
			fmt.Fprintf(w, "key %s %d of %d members\n", done, resp.NumResponses, resp.NumNodes)
			printKeyringErrors(w, &resp)
		})
	}
	return cmd
}

func printKeyringErrors(w io.Writer, resp *gossip.KeyringResponse) {
	names := make([]string, 0, len(resp.Errors))
	for n := range resp.Errors {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "error on %s: %s\n", n, resp.Errors[n])
	}
}

// keyArg is the key a command was given: the argument, or with "-" the
// first line of standard input (a key in argv shows in the process list).
// Either way it must parse as a gossip key.
func keyArg(cmd *cobra.Command, arg string) (string, error) {
	key := arg
	if arg == "-" {
		line, err := bufio.NewReader(io.LimitReader(cmd.InOrStdin(), 1024)).ReadString('\n')
		if err != nil && err != io.EOF {
			return "", fmt.Errorf("read the key from standard input: %w", err)
		}
		key = strings.TrimSpace(line)
		if key == "" {
			return "", usageErrorf("KEY is -, but standard input holds no key")
		}
	}
	if _, err := gossip.ParseKey(key); err != nil {
		return "", usageError{err}
	}
	return key, nil
}
