package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/raftstore"
)

func init() { subcommands = append(subcommands, newSnapshotCmd) }

// snapshotTimeout is the default request timeout of save and restore: a
// snapshot is taken, or restored, on the leader before the answer comes.
const snapshotTimeout = 5 * time.Minute

func newSnapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save, inspect and restore backups of the servers' state (policy and CA)",
		Long: "A snapshot holds every policy document and the CA's replicated state. It\n" +
			"is taken on the Raft leader. A snapshot restores onto the same cluster or onto a\n" +
			"fresh one. Saved through a server agent, it contains the CA's sealed key\n" +
			"material: store it like a secret. Saved through a client agent, it leaves the\n" +
			"servers' private state out, and restoring it keeps the cluster's own.",
	}
	cmd.AddCommand(newSnapshotSaveCmd(), newSnapshotRestoreCmd(), newSnapshotInspectCmd())
	return cmd
}

func newSnapshotSaveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a snapshot of the cluster to FILE",
		Long: "Save a snapshot of the cluster to FILE, written whole or not at all (a\n" +
			"temporary file beside it, then renamed). An existing FILE is kept, and the\n" +
			"command fails, unless --force is given.",
		Example: "  meshwork snapshot save backup-$(date +%F).snap\n" +
			"  meshwork snapshot save --force latest.snap --timeout 10m",
		Args: cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd)
	f.defaultTimeout = snapshotTimeout
	force := cmd.Flags().Bool("force", false, "replace FILE when it exists")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		path := args[0]
		// Checked before the request too, so that a mistake costs no
		// snapshot on the leader; writeNew checks again when it renames.
		if !*force {
			if _, err := os.Lstat(path); err == nil {
				return fmt.Errorf("snapshot save: %s: %w; give --force to replace it", path, fs.ErrExist)
			}
		}
		var buf bytes.Buffer
		if _, err := f.client().Do(cmd.Context(), http.MethodGet, "/v1/snapshot", nil, nil, &buf); err != nil {
			return err
		}
		// Never half written: backups hold the CA's sealed key material.
		if err := writeNew(path, buf.Bytes(), 0o600, *force); err != nil {
			return fmt.Errorf("snapshot save: %w", err)
		}
		out := map[string]any{"file": path, "bytes": buf.Len()}
		return f.print(cmd.OutOrStdout(), out, func(w io.Writer) {
			fmt.Fprintf(w, "Saved snapshot to %s (%d bytes)\n", path, buf.Len())
		})
	}
	return cmd
}

// writeNew writes data to path through a temporary file beside it, synced
// before it takes path's name, so that path is never half written. With
// replace false, an existing path is an error matching fs.ErrExist and is
// left as it was: the name is taken with a hard link, which fails if path
// exists, rather than a rename, which would replace it.
func writeNew(path string, data []byte, perm os.FileMode, replace bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // gone already after a rename
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if replace {
		err = os.Rename(tmp.Name(), path)
	} else {
		err = os.Link(tmp.Name(), path)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w; give --force to replace it", path, fs.ErrExist)
		}
	}
	if err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // the new name survives a crash
		d.Close()
	}
	return nil
}

func newSnapshotRestoreCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "restore FILE",
		Short:   "Replace the cluster's state with the snapshot in FILE",
		Example: "  meshwork snapshot inspect backup.snap && meshwork snapshot restore backup.snap",
		Args:    cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd)
	f.defaultTimeout = snapshotTimeout
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		file, err := os.Open(args[0])
		if err != nil {
			return fmt.Errorf("snapshot restore: %w", err)
		}
		defer file.Close()
		var out raftstore.ApplyResponse
		if _, err := f.client().DoBody(cmd.Context(), http.MethodPut, "/v1/snapshot", nil, file, "application/gzip", &out); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), out, func(w io.Writer) {
			fmt.Fprintf(w, "Restored snapshot %s; the cluster is at index %d\n", args[0], out.Index)
		})
	}
	return cmd
}

func newSnapshotInspectCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect FILE",
		Short: "Check a snapshot file offline and summarise it: index, term, size, contents",
		Long: "Check a snapshot file as a restore would (gzip, header, size, checksum, a\n" +
			"state that decodes and validates) and summarise it. No agent is needed and\n" +
			"no value or secret is printed. A bad file is an error that says what is wrong.",
		Example: "  meshwork snapshot inspect backup.snap\n" +
			"  meshwork snapshot inspect --format json backup.snap | jq .index",
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		f := &clientFlags{format: format}
		if format != "text" && format != "json" {
			return usageErrorf("--format %q: want text or json", format)
		}
		file, err := os.Open(args[0])
		if err != nil {
			return fmt.Errorf("snapshot inspect: %w", err)
		}
		defer file.Close()
		info, err := raftstore.InspectBackup(file)
		if err != nil {
			return fmt.Errorf("snapshot inspect %s: %w", args[0], err)
		}
		return f.print(cmd.OutOrStdout(), info, func(w io.Writer) {
			fmt.Fprintf(w, "File:\t%s (%d bytes)\n", args[0], info.FileSize)
			fmt.Fprintf(w, "Format:\t%s version %d\n", info.Format, info.Version)
			fmt.Fprintf(w, "Index:\t%d\n", info.Index)
			fmt.Fprintf(w, "Term:\t%d\n", info.Term)
			fmt.Fprintf(w, "Taken on:\t%s at %s\n", info.Node, info.Created.Format(time.RFC3339))
			fmt.Fprintf(w, "State:\t%d bytes, sha256 %s\n", info.Size, info.SHA256)
			private := "included (holds the CA's sealed key material: store it like a secret)"
			if info.Private != "included" {
				private = fmt.Sprintf("%s (left out: %s)", info.Private, strings.Join(info.OmittedKV, ", "))
			}
			fmt.Fprintf(w, "Private state:\t%s\n", private)
			fmt.Fprintf(w, "Policy index:\t%d\n", info.PolicyIndex)
			for _, k := range policy.Kinds {
				fmt.Fprintf(w, "  %s:\t%d\n", k, info.Documents[k])
			}
			fmt.Fprintf(w, "ACL:\t%d tokens, %d policies\n", info.ACLTokens, info.ACLPolicies)
			fmt.Fprintln(w, "Keys:")
			for _, g := range slices.Sorted(maps.Keys(info.KVKeys)) {
				fmt.Fprintf(w, "  %s\t%d\n", g, info.KVKeys[g])
			}
		})
	}
	return cmd
}
