//go:build e2e

package netns

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// One request through two hops of the mesh, traced end to end by real
// agents into a real Jaeger (issue 28):
//
//	h1  server agent; Jaeger; app A, the test's client, calls mid through
//	    front's upstream
//	h2  mid (app B), which calls back through its upstream
//	h3  back (app C)
//
// The apps are instrumented as an OpenTelemetry user's would be: each
// starts a span of its own, exports it to the same Jaeger, and passes the
// W3C traceparent on. The agents export their client and server spans;
// none of them is configured to start traces (sample_rate 0), so only the
// apps' sampled flag makes them record. The trace must come back from
// Jaeger's query API as one chain of seven spans:
//
//	A (app) → h1 client → h2 server → B (app) → h2 client → h3 server → C (app)
//
// and each agent's access log must hold the request's lines, with the
// trace's ID.

const (
	chainMidPort      = 8091
	chainBackPort     = 8092
	chainMidUpstream  = "127.0.0.1:9091" // on h1, for app A
	chainBackUpstream = "127.0.0.1:9092" // on h2, for app B
)

const chainPolicy = `kind: IntentionDefaults
name: default
action: allow
---
kind: ServiceDefaults
name: mid
protocol: http
---
kind: ServiceDefaults
name: back
protocol: http
`

// appTracer is an app's own OpenTelemetry tracer, exporting to Jaeger at
// once (a syncer), from inside the app's host.
func appTracer(t *testing.T, j *Jaeger, service string) trace.Tracer {
	t.Helper()
	exp, err := otlptracehttp.New(context.Background(),
		otlptracehttp.WithEndpoint(strings.TrimPrefix(j.OTLP, "http://")), otlptracehttp.WithInsecure(),
		otlptracehttp.WithHTTPClient(j.client()))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
		sdktrace.WithResource(sdkresource.NewSchemaless(semconv.ServiceName(service))))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp.Tracer("e2e")
}

func TestTraceThroughTheMesh(t *testing.T) {
	nw := New(t, 3)
	h1, h2, h3 := nw.Hosts[0], nw.Hosts[1], nw.Hosts[2]
	j := StartJaegerIn(t, h1)
	prop := propagation.TraceContext{}

	// App C answers; app B calls C within its own span.
	tracerC, tracerB := appTracer(t, j, "app-back"), appTracer(t, j, "app-mid")
	serveApp(t, h3, chainBackPort, "back", func(w http.ResponseWriter, r *http.Request) {
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		_, span := tracerC.Start(ctx, "back handles", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		fmt.Fprintln(w, "back")
	})
	bClient := hostClient(h2, 1)
	t.Cleanup(bClient.CloseIdleConnections)
	serveApp(t, h2, chainMidPort, "mid", func(w http.ResponseWriter, r *http.Request) {
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracerB.Start(ctx, "mid handles", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+chainBackUpstream+r.URL.Path, nil)
		prop.Inject(ctx, propagation.HeaderCarrier(req.Header))
		res := do(bClient, req)
		if !res.reached() {
			http.Error(w, "back: "+res.String(), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "mid, then %s", res.body)
	})

	logs := map[*Host]string{}
	telemetry := func(h *Host) string {
		logs[h] = filepath.Join(t.TempDir(), "access.log")
		return fmt.Sprintf("telemetry:\n  tracing:\n    otlp_endpoint: %s\n    sample_rate: 0\n  access_log:\n    path: %s\n", j.OTLP, logs[h])
	}
	enc, ck := Key(), Key()
	server := h1.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Server: true, BootstrapExpect: 1,
		Extra: telemetry(h1) + fmt.Sprintf("services:\n  - name: front\n    id: front\n    upstreams:\n      - {service: mid, local_bind: %q}\n", chainMidUpstream)})
	Eventually(t, 90*time.Second, "the CA on h1", func() error {
		_, err := server.CLI("ca", "roots")
		return err
	})
	services := map[*Host]string{
		h2: fmt.Sprintf("services:\n  - name: mid\n    id: mid\n    port: %d\n    upstreams:\n      - {service: back, local_bind: %q}\n", chainMidPort, chainBackUpstream),
		h3: fmt.Sprintf("services:\n  - {name: back, id: back, port: %d}\n", chainBackPort),
	}
	agents := []*Agent{server}
	for _, h := range []*Host{h2, h3} {
		tok, err := server.Token(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		agents = append(agents, h.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Join: []string{h1.Addr}, Token: tok, Extra: telemetry(h) + services[h]}))
	}
	holds := map[*Host][]string{h1: {"front"}, h2: {"mid"}, h3: {"back"}}
	waitForLeaves(t, agents, holds)
	waitForInstances(t, server, map[string]int{"mid": 1, "back": 1})
	waitForInstances(t, agents[1], map[string]int{"back": 1})
	applyPolicy(t, server, agents, chainPolicy)

	// Warm-up calls carry no traceparent: with sample_rate 0 the mesh
	// records them unsampled, and exports nothing of them.
	aClient := hostClient(h1, 1)
	t.Cleanup(aClient.CloseIdleConnections)
	Eventually(t, 30*time.Second, "a call from A through both hops", func() error {
		req, _ := http.NewRequest(http.MethodGet, "http://"+chainMidUpstream+"/warmup", nil)
		if r := do(aClient, req); !r.reached() || r.body != "mid, then back\n" {
			return errors.New(r.String())
		}
		return nil
	})

	// The traced call: app A's own root span, sampled.
	tracerA := appTracer(t, j, "app-front")
	ctx, root := tracerA.Start(context.Background(), "front calls", trace.WithSpanKind(trace.SpanKindClient))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+chainMidUpstream+"/orders", nil)
	prop.Inject(ctx, propagation.HeaderCarrier(req.Header))
	res := do(aClient, req)
	root.End()
	if !res.reached() || res.body != "mid, then back\n" {
		t.Fatalf("the traced call: %s", res)
	}
	traceID := root.SpanContext().TraceID()
	t.Logf("trace %s", traceID)

	// Jaeger holds the whole chain once every agent has flushed its batch.
	var tr *JaegerTrace
	Eventually(t, 30*time.Second, "Jaeger to hold the trace's seven spans", func() error {
		qctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		got, err := j.Trace(qctx, [16]byte(traceID))
		if err != nil {
			return err
		}
		if len(got.Spans) < 7 {
			return fmt.Errorf("%d spans", len(got.Spans))
		}
		tr = got
		return nil
	})
	chain := chainOf(t, tr)
	want := []struct{ service, node, kind string }{
		{"app-front", "", "client"},
		{"meshwork", h1.Name, "client"},
		{"meshwork", h2.Name, "server"},
		{"app-mid", "", "server"},
		{"meshwork", h2.Name, "client"},
		{"meshwork", h3.Name, "server"},
		{"app-back", "", "server"},
	}
	if len(chain) != len(want) {
		t.Fatalf("the trace's chain from its root has %d spans, want %d: %v", len(chain), len(want), describe(tr, chain))
	}
	for i, w := range want {
		s := chain[i]
		p := tr.Processes[s.ProcessID]
		node, _ := Tag(p.Tags, "meshwork.node")
		kind, _ := Tag(s.Tags, "span.kind")
		if p.ServiceName != w.service || node != w.node || kind != w.kind {
			t.Errorf("span %d of the chain: %s on node %q, kind %s; want %s on %q, %s (chain: %v)", i, p.ServiceName, node, kind, w.service, w.node, w.kind, describe(tr, chain))
		}
	}
	if len(tr.Spans) != len(want) {
		t.Errorf("the trace has %d spans, want %d (the warm-up calls were not sampled): %v", len(tr.Spans), len(want), describe(tr, tr.Spans))
	}

	// Each agent's access log has the request's lines, under its trace.
	id := traceID.String()
	// h2 has a line each way. Their order is not the calls' order: an
	// agent logs a request when its handler returns, which may be after the
	// app already used the answer.
	wantLines := map[*Host][]string{h1: {"outbound"}, h2: {"inbound", "outbound"}, h3: {"inbound"}}
	for _, h := range []*Host{h1, h2, h3} {
		Eventually(t, 10*time.Second, h.Name+"'s access log to hold the traced request", func() error {
			dirs, err := accessLines(logs[h], id)
			if err != nil {
				return err
			}
			slices.Sort(dirs)
			if strings.Join(dirs, ",") != strings.Join(wantLines[h], ",") {
				return fmt.Errorf("lines of trace %s by direction: %v, want %v", id, dirs, wantLines[h])
			}
			return nil
		})
	}
}

// chainOf follows the trace from its root span (no parent) through each
// span's only child, in order.
func chainOf(t *testing.T, tr *JaegerTrace) []JaegerSpan {
	t.Helper()
	children := map[string][]JaegerSpan{}
	var roots []JaegerSpan
	for _, s := range tr.Spans {
		parent := ""
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" {
				parent = r.SpanID
			}
		}
		if parent == "" {
			roots = append(roots, s)
			continue
		}
		children[parent] = append(children[parent], s)
	}
	if len(roots) != 1 {
		t.Fatalf("the trace has %d root spans, want 1: %v", len(roots), describe(tr, tr.Spans))
	}
	chain := []JaegerSpan{roots[0]}
	for {
		next := children[chain[len(chain)-1].SpanID]
		if len(next) != 1 {
			return chain
		}
		chain = append(chain, next[0])
	}
}

// describe names each span by its service, node and operation.
func describe(tr *JaegerTrace, spans []JaegerSpan) []string {
	var out []string
	for _, s := range spans {
		p := tr.Processes[s.ProcessID]
		node, _ := Tag(p.Tags, "meshwork.node")
		out = append(out, fmt.Sprintf("%s@%s %q", p.ServiceName, node, s.OperationName))
	}
	return out
}

// accessLines returns the direction of each line of an access log whose
// trace_id is id, in order.
func accessLines(path, id string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct {
			Direction string `json:"direction"`
			TraceID   string `json:"trace_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("%s: %q: %v", path, sc.Text(), err)
		}
		if line.TraceID == id {
			dirs = append(dirs, line.Direction)
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return dirs, nil
}
