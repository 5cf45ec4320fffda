package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/atomicfile"
	"github.com/meshwork/meshwork/raftstore"
)

func init() { subcommands = append(subcommands, newSnapshotCmd) }

func newSnapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save and restore backups of the servers' state (policy and CA)",
		Long: "A snapshot holds every policy document and the CA's replicated state. It\n" +
			"is taken on the Raft leader. A snapshot restores onto the same cluster or onto a\n" +
			"fresh one. Saved through a server agent, it contains the CA's sealed key\n" +
			"material: store it like a secret. Saved through a client agent, it leaves the\n" +
			"servers' private state out, and restoring it keeps the cluster's own.",
	}
	cmd.AddCommand(newSnapshotSaveCmd(), newSnapshotRestoreCmd())
	return cmd
}

func newSnapshotSaveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a snapshot of the cluster to FILE",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		ctx, cancel := withTimeout(cmd.Context(), 5*time.Minute)
		defer cancel()
		var buf bytes.Buffer
		if _, err := f.client().Do(ctx, "GET", "/v1/snapshot", nil, nil, &buf); err != nil {
			return err
		}
		// Never half written: backups hold the CA's sealed key material.
		if err := atomicfile.Write(args[0], buf.Bytes(), 0o600); err != nil {
			return err
		}
		out := map[string]any{"file": args[0], "bytes": buf.Len()}
		return f.print(cmd.OutOrStdout(), out, func(w io.Writer) {
			fmt.Fprintf(w, "Saved snapshot to %s (%d bytes)\n", args[0], buf.Len())
		})
	}
	return cmd
}

func newSnapshotRestoreCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the cluster's state with the snapshot in FILE",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		b, err := os.ReadFile(args[0])
		if err != nil {
			return err
		}
		ctx, cancel := withTimeout(cmd.Context(), 5*time.Minute)
		defer cancel()
		// The body is the file as is, not JSON: send it directly.
		req, err := http.NewRequestWithContext(ctx, "PUT", f.client().Addr()+"/v1/snapshot", bytes.NewReader(b))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/gzip")
		acl.SetToken(req.Header, f.secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("%w at %s: %v", api.ErrUnreachable, f.client().Addr(), err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode >= 300 {
			var eb struct {
				Error string `json:"error"`
				Code  string `json:"code"`
			}
			if json.Unmarshal(body, &eb) != nil || eb.Error == "" {
				eb.Error = strings.TrimSpace(string(body))
			}
			return &api.Error{Status: resp.StatusCode, Message: eb.Error, Code: eb.Code}
		}
		var out raftstore.ApplyResponse
		if err := json.Unmarshal(body, &out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
		return f.print(cmd.OutOrStdout(), out, func(w io.Writer) {
			fmt.Fprintf(w, "Restored snapshot %s; the cluster is at index %d\n", args[0], out.Index)
		})
	}
	return cmd
}
