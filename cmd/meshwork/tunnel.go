package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshwork/meshwork/transport"
)

func init() { subcommands = append(subcommands, newTunnelCmd) }

func newTunnelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tunnel",
		Short: "Inspect the data plane: listeners, peer connections, streams",
	}
	cmd.AddCommand(newTunnelStatusCmd())
	return cmd
}

func newTunnelStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the tunnel's state, its VIP and upstream listeners, and its peers",
		Args:  cobra.NoArgs,
	}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := f.validate(); err != nil {
			return err
		}
		var st transport.Status
		if _, err := f.client().Do(cmd.Context(), http.MethodGet, transport.StatusPath, nil, nil, &st); err != nil {
			return err
		}
		return f.print(cmd.OutOrStdout(), st, func(w io.Writer) { printTunnelStatus(w, &st, time.Now()) })
	}
	return cmd
}

func printTunnelStatus(w io.Writer, st *transport.Status, now time.Time) {
	fmt.Fprintf(w, "Node:\t%s\n", st.Node)
	fmt.Fprintf(w, "State:\t%s\n", st.State)
	if st.Addr != "" {
		fmt.Fprintf(w, "Listening:\t%s/udp (GSO %s, GRO %s)\n", st.Addr, onOff(st.GSO), onOff(st.GRO))
		fmt.Fprintf(w, "UDP buffers:\t%s receive, %s send\n", mebibytes(st.UDPReceiveBuffer), mebibytes(st.UDPSendBuffer))
	}
	fmt.Fprintf(w, "In flight:\t%d connections and streams\n", st.InFlight)

	fmt.Fprintln(w)
	if len(st.Listeners) == 0 {
		fmt.Fprintln(w, "No listeners.")
	} else {
		fmt.Fprintln(w, "LISTENER\tKIND\tSERVICE\tPORT\tSOURCE")
		for _, l := range st.Listeners {
			port, source := strconv.Itoa(l.Port), l.Source
			if l.Port == 0 {
				port = "main"
			}
			if source == "" {
				source = "the caller's"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", l.Addr, l.Kind, l.Service, port, source)
		}
	}

	fmt.Fprintln(w)
	printOutliers(w, st.Outliers)

	fmt.Fprintln(w)
	if len(st.Peers) == 0 {
		fmt.Fprintln(w, "No peers.")
		return
	}
	fmt.Fprintln(w, "PEER\tADDRESS\tCONNECTED\tSTREAMS OUT\tSTREAMS IN/LIMIT\tNOTE")
	for _, p := range st.Peers {
		addr, note := p.Addr, ""
		if addr == "" {
			addr = "-"
		}
		switch {
		case p.LastError != "":
			note = fmt.Sprintf("backing off until %s: %s", p.RetryAt.Format(time.RFC3339), p.LastError)
		case !p.Expires.IsZero():
			note = "replaced in " + p.Expires.Sub(now).Round(time.Second).String()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d/%d\t%s\n", p.Node, addr, yesNo(p.Connected), p.StreamsOut, p.StreamsIn, p.StreamsInLimit, note)
	}
}

// printOutliers lists the instances outlier detection has ejected or
// holds on probation.
func printOutliers(w io.Writer, outliers []transport.OutlierStatus) {
	if len(outliers) == 0 {
		fmt.Fprintln(w, "No ejected instances.")
		return
	}
	fmt.Fprintln(w, "EJECTED\tSERVICE\tSTATE\tEJECTIONS")
	for _, o := range outliers {
		state := "probation"
		if o.Ejected {
			state = "out for " + o.Remaining
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\n", o.Instance, o.Service, state, o.Ejections)
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func mebibytes(n int) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
