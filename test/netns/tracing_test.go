//go:build e2e

package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/telemetry/tracing"
	"github.com/meshwork/meshwork/transport/observe"
)

// TestTraceExportToJaeger exports, from three agents' exporters, the four
// spans the mesh records for one request chain, app A → agent → agent →
// app B → agent → agent → app C, with the IDs chained as the data plane
// propagates them (transport/observe), into a real Jaeger; then reads the
// trace back through Jaeger's query API. It needs no root: Jaeger and the
// exporters are on this machine's loopback.
//
//	host-a  web (app A)   outbound client span  s1, parent none (A sent no traceparent)
//	host-b  api (app B)   inbound  server span  s2, parent s1; B gets traceparent 00-T-s2-01
//	host-b  api (app B)   outbound client span  s3, parent s2 (B passed its traceparent on)
//	host-c  stock (app C) inbound  server span  s4, parent s3; C answers UNAVAILABLE
func TestTraceExportToJaeger(t *testing.T) {
	j := StartJaeger(t)

	exporters := map[string]*tracing.Exporter{}
	for _, node := range []string{"host-a", "host-b", "host-c"} {
		e, err := tracing.New(tracing.Config{Endpoint: j.OTLP, Node: node, Version: "e2e"}, prometheus.NewRegistry(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		exporters[node] = e
	}

	var trace [16]byte
	var s1, s2, s3, s4 [8]byte
	for _, b := range [][]byte{trace[:], s1[:], s2[:], s3[:], s4[:]} {
		_, _ = rand.Read(b)
	}
	t0 := time.Now().Truncate(time.Microsecond) // Jaeger keeps microseconds
	ms := time.Millisecond
	chain := []struct {
		node string
		call observe.Call
	}{
		{"host-a", observe.Call{
			Direction: observe.Outbound, Protocol: observe.HTTP, Start: t0, Duration: 50 * ms,
			Source: "web", Destination: "api", Method: "GET", Authority: "api.service.mesh", Path: "/orders",
			Status: 200, GRPCStatus: -1, Attempts: 1, BytesOut: 512, Instance: "host-b/198.18.0.12:8080",
			Trace: observe.TraceIDs{TraceID: trace, SpanID: s1, Sampled: true},
		}},
		{"host-b", observe.Call{
			Direction: observe.Inbound, Protocol: observe.HTTP, Start: t0.Add(2 * ms), Duration: 46 * ms,
			Source: "web", Destination: "api", SourceIdentity: "spiffe://mesh/svc/web",
			Method: "GET", Authority: "api.service.mesh", Path: "/orders", Status: 200, GRPCStatus: -1, BytesOut: 512,
			Trace: observe.TraceIDs{TraceID: trace, SpanID: s2, ParentID: s1, Sampled: true},
		}},
		{"host-b", observe.Call{
			Direction: observe.Outbound, Protocol: observe.GRPC, Start: t0.Add(5 * ms), Duration: 30 * ms,
			Source: "api", Destination: "stock", Method: "POST", Authority: "stock.service.mesh:9000",
			Path: "/inventory.Stock/Reserve", Status: 200, GRPCStatus: 14, Attempts: 2, Route: "stock-v2",
			Trace: observe.TraceIDs{TraceID: trace, SpanID: s3, ParentID: s2, Sampled: true},
		}},
		{"host-c", observe.Call{
			Direction: observe.Inbound, Protocol: observe.GRPC, Start: t0.Add(7 * ms), Duration: 25 * ms,
			Source: "api", Destination: "stock", SourceIdentity: "spiffe://mesh/svc/api",
			Method: "POST", Authority: "stock.service.mesh:9000", Path: "/inventory.Stock/Reserve", Status: 200, GRPCStatus: 14,
			Trace: observe.TraceIDs{TraceID: trace, SpanID: s4, ParentID: s3, Sampled: true},
		}},
	}
	for _, hop := range chain {
		exporters[hop.node].Begin(&hop.call)
		exporters[hop.node].End(&hop.call)
	}
	// A call whose trace was not sampled leaves no span.
	var unsampled [16]byte
	_, _ = rand.Read(unsampled[:])
	quiet := chain[0].call
	quiet.Trace = observe.TraceIDs{TraceID: unsampled, SpanID: s1, Sampled: false}
	exporters["host-a"].End(&quiet)

	for node, e := range exporters {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := e.Close(ctx); err != nil {
			t.Fatalf("%s: close: %v", node, err)
		}
		cancel()
	}

	var got *JaegerTrace
	Eventually(t, 30*time.Second, "jaeger holds the trace's 4 spans", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tr, err := j.Trace(ctx, trace)
		if err != nil {
			return err
		}
		if len(tr.Spans) < 4 {
			return errors.New(strconv.Itoa(len(tr.Spans)) + " spans")
		}
		got = tr
		return nil
	})
	if len(got.Spans) != 4 {
		t.Fatalf("trace has %d spans, want 4", len(got.Spans))
	}

	hexID := func(b []byte) string { return hex.EncodeToString(b) }
	want := []struct {
		span      [8]byte
		parent    string // "" for the root
		name      string
		kind      string
		node, svc string
		start     time.Time
		duration  time.Duration
		isError   bool
		tags      map[string]string
	}{
		{s1, "", "GET /orders", "client", "host-a", "web", t0, 50 * ms, false, map[string]string{
			"http.request.method": "GET", "url.path": "/orders", "http.response.status_code": "200",
			"server.address": "api.service.mesh", "network.protocol.name": "http",
			"meshwork.source": "web", "meshwork.destination": "api", "meshwork.attempts": "1",
		}},
		{s2, hexID(s1[:]), "GET /orders", "server", "host-b", "api", t0.Add(2 * ms), 46 * ms, false, map[string]string{
			"http.request.method": "GET", "url.path": "/orders", "http.response.status_code": "200",
			"meshwork.source": "web", "meshwork.destination": "api", "meshwork.source_identity": "spiffe://mesh/svc/web",
		}},
		{s3, hexID(s2[:]), "inventory.Stock/Reserve", "client", "host-b", "api", t0.Add(5 * ms), 30 * ms, true, map[string]string{
			"rpc.system": "grpc", "rpc.service": "inventory.Stock", "rpc.method": "Reserve", "rpc.grpc.status_code": "14",
			"server.address": "stock.service.mesh", "server.port": "9000",
			"meshwork.route": "stock-v2", "meshwork.attempts": "2", "meshwork.source": "api", "meshwork.destination": "stock",
		}},
		{s4, hexID(s3[:]), "inventory.Stock/Reserve", "server", "host-c", "stock", t0.Add(7 * ms), 25 * ms, true, map[string]string{
			"rpc.system": "grpc", "rpc.grpc.status_code": "14", "meshwork.source": "api", "meshwork.destination": "stock",
		}},
	}
	bySpan := map[string]JaegerSpan{}
	for _, s := range got.Spans {
		bySpan[s.SpanID] = s
	}
	for _, w := range want {
		id := hexID(w.span[:])
		s, ok := bySpan[id]
		if !ok {
			t.Errorf("span %s (%s, %s) is not in the trace", id, w.name, w.kind)
			continue
		}
		if s.TraceID != hexID(trace[:]) {
			t.Errorf("span %s: trace %s, want %x", id, s.TraceID, trace)
		}
		if s.OperationName != w.name {
			t.Errorf("span %s: operation %q, want %q", id, s.OperationName, w.name)
		}
		switch {
		case w.parent == "" && len(s.References) != 0:
			t.Errorf("span %s: references %+v, want none (the root)", id, s.References)
		case w.parent != "" && (len(s.References) != 1 || s.References[0].RefType != "CHILD_OF" || s.References[0].SpanID != w.parent):
			t.Errorf("span %s: references %+v, want CHILD_OF %s", id, s.References, w.parent)
		}
		if k, _ := Tag(s.Tags, "span.kind"); k != w.kind {
			t.Errorf("span %s: span.kind %q, want %q", id, k, w.kind)
		}
		if s.StartTime != w.start.UnixMicro() || s.Duration != w.duration.Microseconds() {
			t.Errorf("span %s: start %d µs, duration %d µs; want %d, %d", id, s.StartTime, s.Duration, w.start.UnixMicro(), w.duration.Microseconds())
		}
		for k, v := range w.tags {
			if got, _ := Tag(s.Tags, k); got != v {
				t.Errorf("span %s: tag %s = %q, want %q", id, k, got, v)
			}
		}
		if e, _ := Tag(s.Tags, "error"); (e == "true") != w.isError {
			t.Errorf("span %s: error tag %q, want error=%v", id, e, w.isError)
		}
		p, ok := got.Processes[s.ProcessID]
		if !ok {
			t.Errorf("span %s: process %q not in the trace", id, s.ProcessID)
			continue
		}
		if p.ServiceName != tracing.ServiceName {
			t.Errorf("span %s: service %q, want %q", id, p.ServiceName, tracing.ServiceName)
		}
		if n, _ := Tag(p.Tags, "meshwork.node"); n != w.node {
			t.Errorf("span %s: process meshwork.node %q, want %q", id, n, w.node)
		}
		if v, _ := Tag(p.Tags, "meshwork.service"); v != w.svc {
			t.Errorf("span %s: process meshwork.service %q, want %q", id, v, w.svc)
		}
	}

	// The call that was not sampled: had host-a's exporter sent it, it
	// would have gone in the batch that is stored by now.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if tr, err := j.Trace(ctx, unsampled); !errors.Is(err, errNoTrace) {
		t.Errorf("the trace that was not sampled: %+v, %v; want none", tr, err)
	}
}
