package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func init() {
	subcommands = append(subcommands, newLeaveCmd, newForceLeaveCmd, newMonitorCmd)
}

func newLeaveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Make the agent leave the cluster gracefully and stop",
		Long: `Make the agent leave the cluster gracefully and stop, as SIGTERM does: the
other agents see it as left, not failed, and stop sending it traffic at
once; it then lets the connections its tunnel carries end
(tunnel.drain_timeout) and exits with status 0. Under systemd, the unit
stays stopped until it is started again (Restart=on-failure does not apply).

Needs agent:write.`,
		Example: "  meshwork leave\n  meshwork leave --http-addr 10.0.0.7:8500",
		Args:    cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		if err := f.client().Leave(cmd.Context()); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), map[string]bool{"left": true}, func(w io.Writer) {
			fmt.Fprintln(w, "The agent left the cluster and is stopping")
		})
	}
	return cmd
}

func newForceLeaveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "force-leave NODE",
		Short: "Mark a failed node as left",
		Long: `Mark a failed node as left: a node that died without leaving (a host that
is gone for good) stops being retried as a failed member, and is forgotten
after gossip.tombstone_timeout, as after a graceful leave. Should it come
back, it rejoins as usual.

The agent refuses a node that is alive or suspect: run "meshwork leave"
against that node instead. A server that is gone for good must also leave
the Raft configuration: "meshwork operator raft remove-peer NODE".

Needs node:write on NODE.`,
		Example: "  meshwork members | awk '$3 == \"failed\"'\n  meshwork force-leave web-07",
		Args:    cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		if err := f.client().ForceLeave(cmd.Context(), args[0]); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), map[string]string{"left": args[0]}, func(w io.Writer) {
			fmt.Fprintf(w, "Marked %s as left\n", args[0])
		})
	}
	return cmd
}

func newMonitorCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Stream the agent's log",
		Long: `Stream the agent's log lines as it writes them, at --log-level and above
(whatever level the agent itself logs at), until interrupted. A reader too
slow for the agent's pace loses lines rather than slow the agent down; the
stream says how many were dropped.

Needs agent:read.`,
		Example: "  meshwork monitor\n  meshwork monitor --log-level debug | grep component=gossip",
		Args:    cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	level := cmd.Flags().String("log-level", "info", "debug, info, warn or error")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(*level)); err != nil {
			return usageErrorf("--log-level %q: want debug, info, warn or error", *level)
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		body, err := f.client().Monitor(ctx, *level)
		if err != nil {
			return err
		}
		defer body.Close()
		out := bufio.NewWriter(cmd.OutOrStdout())
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			out.Write(sc.Bytes())
			out.WriteByte('\n')
			if err := out.Flush(); err != nil {
				return err
			}
		}
		switch err := sc.Err(); {
		case ctx.Err() != nil && cmd.Context().Err() == nil:
			return nil // interrupted: the normal end
		case errors.Is(err, context.Canceled):
			return nil
		case err != nil:
			return fmt.Errorf("monitor: the stream broke: %w", err)
		}
		return errors.New("monitor: the agent ended the stream (it is stopping)")
	}
	return cmd
}
