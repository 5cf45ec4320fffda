package main

import (
	"bytes"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/meshwork/meshwork/transport"
)

func TestPrintTunnelStatus(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	st := transport.Status{
		Node: "web-01", State: "serving", Addr: "10.0.0.5:7948", GSO: true, GRO: true,
		UDPReceiveBuffer: 14680064, UDPSendBuffer: 14680064, InFlight: 3,
		Listeners: []transport.ListenerInfo{
			{Kind: "upstream", Addr: "127.0.0.1:9191", Service: "api", Source: "spiffe://meshwork.local/svc/web"},
			{Kind: "vip", Addr: "127.240.0.7:8080", Service: "api", Port: 8080},
		},
		Peers: []transport.PeerStatus{
			{Node: "api-01", Addr: "10.0.0.6:7948", Connected: true, StreamsOut: 2, StreamsInLimit: 32768, Expires: now.Add(90 * time.Minute)},
			{Node: "api-02", Addr: "10.0.0.7:7948", LastError: "timeout: no recent network activity", RetryAt: now.Add(4 * time.Second), StreamsInLimit: 32768},
			{Node: "db-01", StreamsIn: 1, StreamsInLimit: 32768},
		},
		Outliers: []transport.OutlierStatus{
			{Service: "api", Instance: "api-02/api-1", Ejected: true, Remaining: "29.5s", Ejections: 1},
			{Service: "api", Instance: "api-03/api-1", Probation: true, Ejections: 2},
		},
	}
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	printTunnelStatus(tw, &st, now)
	tw.Flush()
	out := b.String()
	for _, want := range []string{
		"State:        serving",
		"Listening:    10.0.0.5:7948/udp (GSO on, GRO on)",
		"UDP buffers:  14.0 MiB receive, 14.0 MiB send",
		"In flight:    3 connections and streams",
		"127.0.0.1:9191    upstream  api      main  spiffe://meshwork.local/svc/web",
		"127.240.0.7:8080  vip       api      8080  the caller's",
		"api-01  10.0.0.6:7948  yes        2            0/32768           replaced in 1h30m0s",
		"api-02  10.0.0.7:7948  no         0            0/32768           backing off until 2026-12-04T12:00:04Z: timeout: no recent network activity",
		"db-01   -              no         0            1/32768",
		"api-02/api-1  api      out for 29.5s  1",
		"api-03/api-1  api      probation      2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	b.Reset()
	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	printTunnelStatus(tw, &transport.Status{Node: "c9", State: "waiting for a certificate"}, now)
	tw.Flush()
	if out := b.String(); strings.Contains(out, "Listening") || !strings.Contains(out, "No listeners.") || !strings.Contains(out, "No peers.") ||
		!strings.Contains(out, "No ejected instances.") {
		t.Errorf("a tunnel that is not up:\n%s", out)
	}
}
