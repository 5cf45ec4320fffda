package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/raftstore"
)

func init() { subcommands = append(subcommands, newPolicyCmd) }

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Apply, read, list and delete policy documents",
		Long: "Policy documents (ServiceDefaults, Route, Split, Resilience, Fault, Intention,\n" +
			"IntentionDefaults, ServiceIdentity) are YAML documents typed by kind and\n" +
			"named by name; see docs/policy.md. Writes go to the Raft leader through\n" +
			"the local agent; reads come from the agent's own copy unless --consistent.",
	}
	cmd.AddCommand(newPolicyApplyCmd(), newPolicyGetCmd(), newPolicyListCmd(), newPolicyDeleteCmd(), newPolicyStatusCmd())
	return cmd
}

// readPolicyFiles parses FILE, every *.yaml, *.yml and *.json of DIR (in
// name order), or stdin for "-". Errors name the file.
func readPolicyFiles(stdin io.Reader, path string) ([]policy.Document, error) {
	var files []string
	if path == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, policy.MaxInput+1))
		if err != nil {
			return nil, err
		}
		docs, err := policy.Parse(b)
		if err != nil {
			return nil, fmt.Errorf("stdin: %w", err)
		}
		return docs, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			ext := strings.ToLower(filepath.Ext(e.Name()))
			if !e.IsDir() && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
		sort.Strings(files)
		if len(files) == 0 {
			return nil, fmt.Errorf("%s: no .yaml, .yml or .json file", path)
		}
	} else {
		files = []string{path}
	}
	var all []policy.Document
	var errs []error
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		docs, err := policy.Parse(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		all = append(all, docs...)
	}
	return all, errors.Join(errs...)
}

// idempotencyFlag registers --idempotency-key on a command that writes.
func idempotencyFlag(cmd *cobra.Command) *string {
	key := cmd.Flags().String("idempotency-key", "", "name this write: run again with the same key, it is applied at most once (default: a new key)")
	return key
}

// writeKey returns the key of this write: the flag's, checked, or a new one.
func writeKey(flag string) (string, error) {
	if flag == "" {
		return raftstore.NewIdempotencyKey(), nil
	}
	if err := raftstore.ValidateIdempotencyKey(flag); err != nil {
		return "", fmt.Errorf("--idempotency-key: %w", err)
	}
	return flag, nil
}

// writeFailed explains a failed write. When it may have been applied, it
// says so and how to settle it, and the command exits with
// exitOutcomeUnknown.
func writeFailed(cmd *cobra.Command, err error, key string) error {
	if !errors.Is(err, api.ErrOutcomeUnknown) {
		return err
	}
	w := cmd.ErrOrStderr()
	fmt.Fprintf(w, "meshwork: %v\n", err)
	fmt.Fprintf(w, "The write MAY OR MAY NOT have been applied. To settle it without applying it twice, run the same command again with\n  --idempotency-key %s\n", key)
	fmt.Fprintln(w, "It then reports the first result if the write was applied, and applies it otherwise. Run it with another key, or none, only to make a new write.")
	return exitError{code: exitOutcomeUnknown}
}

func newPolicyApplyCmd() *cobra.Command {
	var file string
	var cas int64
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Apply policy documents from a file, a directory or stdin, in one transaction",
		Long: "Apply policy documents in one transaction. Exit status: 0 applied, 1 not\n" +
			"applied (or another error), 3 outcome unknown: the write may or may not have\n" +
			"been applied; run the command again with the --idempotency-key it prints.",
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML/JSON file, directory of them, or - for stdin (required)")
	cmd.Flags().Int64Var(&cas, "cas", -1, "apply only if every document is at this modify index (0: only if none exists yet)")
	keyFlag := idempotencyFlag(cmd)
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		if file == "" {
			return errors.New("-f FILE|DIR|- is required")
		}
		key, err := writeKey(*keyFlag)
		if err != nil {
			return err
		}
		docs, err := readPolicyFiles(cmd.InOrStdin(), file)
		if err != nil {
			return err
		}
		q := url.Values{}
		if cas >= 0 {
			q.Set("cas", strconv.FormatInt(cas, 10))
		}
		var out raftstore.ApplyResponse
		if _, err := f.client().DoKeyed(cmd.Context(), "PUT", "/v1/policy", q, key, docs, &out); err != nil {
			return writeFailed(cmd, err, key)
		}
		return f.print(cmd.OutOrStdout(), out, func(w io.Writer) {
			for _, k := range out.Documents {
				fmt.Fprintf(w, "%s %q applied\n", k.Kind, k.Name)
			}
			fmt.Fprintf(w, "index %d\n", out.Index)
		})
	}
	return cmd
}

func newPolicyGetCmd() *cobra.Command {
	var consistent bool
	cmd := &cobra.Command{
		Use:   "get KIND NAME",
		Short: "Show one policy document (as YAML that apply accepts)",
		Args:  cobra.ExactArgs(2),
	}
	cmd.Flags().BoolVar(&consistent, "consistent", false, "read through the Raft leader instead of the agent's copy")
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		kind, err := policy.ParseKind(args[0])
		if err != nil {
			return usageError{err}
		}
		q := url.Values{}
		if consistent {
			q.Set("consistent", "")
		}
		var e policy.Entry
		if _, err := f.client().Do(cmd.Context(), "GET", "/v1/policy/"+url.PathEscape(string(kind))+"/"+url.PathEscape(args[1]), q, nil, &e); err != nil {
			return err
		}
		var yerr error
		perr := f.print(cmd.OutOrStdout(), e, func(w io.Writer) {
			y, err := policy.EncodeYAML([]policy.Document{e.Document})
			if err != nil {
				yerr = err
				return
			}
			fmt.Fprintf(w, "# create_index: %d, modify_index: %d\n%s", e.CreateIndex, e.ModifyIndex, y)
		})
		return errors.Join(perr, yerr)
	}
	return cmd
}

func newPolicyListCmd() *cobra.Command {
	var consistent bool
	cmd := &cobra.Command{
		Use:   "list [KIND]",
		Short: "List policy documents, of one kind or all",
		Args:  cobra.MaximumNArgs(1),
	}
	cmd.Flags().BoolVar(&consistent, "consistent", false, "read through the Raft leader instead of the agent's copy")
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		q := url.Values{}
		if len(args) == 1 {
			kind, err := policy.ParseKind(args[0])
			if err != nil {
				return usageError{err}
			}
			q.Set("kind", string(kind))
		}
		if consistent {
			q.Set("consistent", "")
		}
		var out raftstore.PolicyList
		if _, err := f.client().Do(cmd.Context(), "GET", "/v1/policy", q, nil, &out); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), out, func(w io.Writer) {
			fmt.Fprintln(w, "KIND\tNAME\tMODIFY_INDEX")
			for _, e := range out.Documents {
				fmt.Fprintf(w, "%s\t%s\t%d\n", e.Kind, e.Name, e.ModifyIndex)
			}
		})
	}
	return cmd
}

func newPolicyDeleteCmd() *cobra.Command {
	var cas int64
	cmd := &cobra.Command{
		Use:   "delete KIND NAME",
		Short: "Delete one policy document",
		Long: "Delete one policy document. Exit status: 0 deleted, 1 not deleted (or\n" +
			"another error), 3 outcome unknown: run the command again with the\n" +
			"--idempotency-key it prints.",
		Args: cobra.ExactArgs(2),
	}
	cmd.Flags().Int64Var(&cas, "cas", -1, "delete only if the document is at this modify index")
	keyFlag := idempotencyFlag(cmd)
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		kind, err := policy.ParseKind(args[0])
		if err != nil {
			return usageError{err}
		}
		key, err := writeKey(*keyFlag)
		if err != nil {
			return err
		}
		q := url.Values{}
		if cas >= 0 {
			q.Set("cas", strconv.FormatInt(cas, 10))
		}
		var out raftstore.ApplyResponse
		if _, err := f.client().DoKeyed(cmd.Context(), "DELETE", "/v1/policy/"+url.PathEscape(string(kind))+"/"+url.PathEscape(args[1]), q, key, nil, &out); err != nil {
			return writeFailed(cmd, err, key)
		}
		return f.print(cmd.OutOrStdout(), out, func(w io.Writer) {
			fmt.Fprintf(w, "%s %q deleted at index %d\n", kind, args[1], out.Index)
		})
	}
	return cmd
}

func newPolicyStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the policy index the agent enforces and how fresh it is",
		Args:  cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		var st raftstore.PolicyStatus
		if _, err := f.client().Do(cmd.Context(), "GET", "/v1/policy/status", nil, nil, &st); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), st, func(w io.Writer) {
			fmt.Fprintf(w, "Index:\t%d\n", st.Index)
			fmt.Fprintf(w, "Digest:\t%s\n", st.Digest)
			if st.LastContact.IsZero() {
				fmt.Fprintf(w, "Last contact:\tnever\n")
			} else {
				fmt.Fprintf(w, "Last contact:\t%s (%s ago)\n", st.LastContact.Format(time.RFC3339), time.Duration(st.StalenessSeconds*float64(time.Second)).Round(time.Millisecond))
			}
			fmt.Fprintf(w, "Stale:\t%v\n", st.Stale)
			if st.Leader != "" {
				fmt.Fprintf(w, "Leader:\t%s\n", st.Leader)
			}
			for _, k := range policy.Kinds {
				fmt.Fprintf(w, "%s:\t%d\n", k, st.Documents[k])
			}
		})
	}
	return cmd
}
