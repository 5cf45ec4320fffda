package tracing

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/meshwork/meshwork/transport/observe"
)

var (
	testTrace  = [16]byte{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	appSpan    = [8]byte{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
	clientSpan = [8]byte{0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11}
	serverSpan = [8]byte{0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22}
	tcpSpan    = [8]byte{0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33}
	tcpTrace   = [16]byte{0x99, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	start      = time.Date(2026, 12, 7, 9, 30, 0, 123456789, time.UTC)
)

// testCalls are an HTTP client span under the app's, the gRPC server span
// of another call that failed, an L4 connection the mesh could not make,
// and a call that was not sampled.
func testCalls() []observe.Call {
	return []observe.Call{
		{
			Direction: observe.Outbound, Protocol: observe.HTTP, Start: start, Duration: 25 * time.Millisecond,
			Source: "web", Destination: "api", SourceIdentity: "spiffe://mesh/svc/web",
			Route: "canary", Instance: "node-b/10.0.0.2:8080",
			Method: "GET", Authority: "api.service.mesh:8080", Path: "/orders/7?full=1", UserAgent: "curl/8.5.0", RequestID: "req-1",
			Status: 200, GRPCStatus: -1, BytesIn: 10, BytesOut: 300, Attempts: 2,
			Trace: observe.TraceIDs{TraceID: testTrace, SpanID: clientSpan, ParentID: appSpan, Sampled: true},
		},
		{
			Direction: observe.Inbound, Protocol: observe.GRPC, Start: start.Add(time.Millisecond), Duration: 20 * time.Millisecond,
			Source: "api", Destination: "stock", SourceIdentity: "spiffe://mesh/svc/api",
			Method: "POST", Authority: "stock", Path: "/inventory.Stock/Reserve",
			Status: 200, GRPCStatus: 14,
			Trace: observe.TraceIDs{TraceID: testTrace, SpanID: serverSpan, ParentID: clientSpan, Sampled: true},
		},
		{
			Direction: observe.Outbound, Protocol: observe.TCP, Start: start, Duration: 3 * time.Second,
			Source: "web", Destination: "db", MeshError: "connect_failed", GRPCStatus: -1, Attempts: 3,
			Trace: observe.TraceIDs{TraceID: tcpTrace, SpanID: tcpSpan, Sampled: true},
		},
		{
			Direction: observe.Outbound, Protocol: observe.HTTP, Start: start, Duration: time.Millisecond,
			Source: "web", Destination: "api", Method: "GET", Path: "/", Status: 200, GRPCStatus: -1,
			Trace: observe.TraceIDs{TraceID: testTrace, SpanID: [8]byte{9}, Sampled: false},
		},
	}
}

func newTestExporter(t *testing.T, cfg Config) (*Exporter, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if cfg.Node == "" {
		cfg.Node = "node-a"
	}
	e, err := New(cfg, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e, reg
}

func closeWithin(t *testing.T, e *Exporter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestExportToOTLPReceiver(t *testing.T) {
	r := newReceiver(t, false)
	e, _ := newTestExporter(t, Config{Endpoint: r.endpoint(), Node: "node-a", Version: "1.2.3"})
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range testCalls() {
		e.Begin(&c)
		e.End(&c)
	}
	closeWithin(t, e)

	got := r.received()
	bySpan := map[[8]byte]receivedSpan{}
	for _, s := range got {
		bySpan[[8]byte(s.span.SpanId)] = s
	}
	if len(got) != 3 || len(bySpan) != 3 {
		t.Fatalf("receiver got %d spans (%d distinct), want the 3 sampled ones", len(got), len(bySpan))
	}
	if p := r.paths[0]; p != TracesPath {
		t.Errorf("request path %q, want %q for an endpoint without a path", p, TracesPath)
	}

	for _, tc := range []struct {
		name     string
		span     [8]byte
		trace    [16]byte
		parent   []byte
		kind     tracepb.Span_SpanKind
		spanName string
		start    time.Time
		duration time.Duration
		status   tracepb.Status_StatusCode
		attrs    map[string]string
		absent   []string
		service  string
	}{
		{
			name: "http client", span: clientSpan, trace: testTrace, parent: appSpan[:],
			kind: tracepb.Span_SPAN_KIND_CLIENT, spanName: "GET /orders/7",
			start: start, duration: 25 * time.Millisecond, status: tracepb.Status_STATUS_CODE_UNSET,
			attrs: map[string]string{
				"http.request.method": "GET", "url.path": "/orders/7", "http.response.status_code": "200",
				"server.address": "api.service.mesh", "server.port": "8080", "network.protocol.name": "http",
				"meshwork.source": "web", "meshwork.destination": "api", "meshwork.route": "canary",
				"meshwork.attempts": "2", "meshwork.instance": "node-b/10.0.0.2:8080",
				"user_agent.original": "curl/8.5.0", "meshwork.request_id": "req-1",
				"http.request.body.size": "10", "http.response.body.size": "300",
				"meshwork.source_identity": "spiffe://mesh/svc/web",
			},
			absent:  []string{"meshwork.mesh_error", "rpc.grpc.status_code", "error.type"},
			service: "web",
		},
		{
			name: "grpc server, failed", span: serverSpan, trace: testTrace, parent: clientSpan[:],
			kind: tracepb.Span_SPAN_KIND_SERVER, spanName: "inventory.Stock/Reserve",
			start: start.Add(time.Millisecond), duration: 20 * time.Millisecond, status: tracepb.Status_STATUS_CODE_ERROR,
			attrs: map[string]string{
				"rpc.system": "grpc", "rpc.service": "inventory.Stock", "rpc.method": "Reserve",
				"rpc.grpc.status_code": "14", "error.type": "14",
				"meshwork.source": "api", "meshwork.destination": "stock",
			},
			absent:  []string{"meshwork.attempts", "meshwork.route"},
			service: "stock",
		},
		{
			name: "tcp root, refused", span: tcpSpan, trace: tcpTrace, parent: nil,
			kind: tracepb.Span_SPAN_KIND_CLIENT, spanName: "tcp db",
			start: start, duration: 3 * time.Second, status: tracepb.Status_STATUS_CODE_ERROR,
			attrs: map[string]string{
				"network.transport": "tcp", "server.address": "db", "meshwork.mesh_error": "connect_failed",
				"error.type": "connect_failed", "meshwork.attempts": "3", "meshwork.bytes_in": "0",
			},
			absent:  []string{"http.request.method", "network.protocol.name"},
			service: "web",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, ok := bySpan[tc.span]
			if !ok {
				t.Fatalf("span %x not exported", tc.span)
			}
			s := rs.span
			if !bytes.Equal(s.TraceId, tc.trace[:]) {
				t.Errorf("trace ID %x, want %x", s.TraceId, tc.trace)
			}
			if !bytes.Equal(s.ParentSpanId, tc.parent) {
				t.Errorf("parent %x, want %x", s.ParentSpanId, tc.parent)
			}
			if s.Kind != tc.kind {
				t.Errorf("kind %v, want %v", s.Kind, tc.kind)
			}
			if s.Name != tc.spanName {
				t.Errorf("name %q, want %q", s.Name, tc.spanName)
			}
			if want := uint64(tc.start.UnixNano()); s.StartTimeUnixNano != want {
				t.Errorf("start %d, want %d", s.StartTimeUnixNano, want)
			}
			if d := time.Duration(s.EndTimeUnixNano - s.StartTimeUnixNano); d != tc.duration {
				t.Errorf("duration %s, want %s", d, tc.duration)
			}
			if s.Flags&0xff != 1 {
				t.Errorf("trace flags %#x, want sampled", s.Flags&0xff)
			}
			if code := s.GetStatus().GetCode(); code != tc.status {
				t.Errorf("status %v, want %v", code, tc.status)
			}
			attrs := attrMap(s.Attributes)
			for k, want := range tc.attrs {
				if attrs[k] != want {
					t.Errorf("attribute %s = %q, want %q", k, attrs[k], want)
				}
			}
			for _, k := range tc.absent {
				if v, ok := attrs[k]; ok {
					t.Errorf("attribute %s = %q, want none", k, v)
				}
			}
			wantRes := map[string]string{"service.name": "meshwork", "meshwork.node": "node-a", "meshwork.service": tc.service, "service.version": "1.2.3"}
			for k, want := range wantRes {
				if rs.resource[k] != want {
					t.Errorf("resource %s = %q, want %q", k, rs.resource[k], want)
				}
			}
			if rs.scope != scopeName {
				t.Errorf("scope %q, want %q", rs.scope, scopeName)
			}
		})
	}
	if got := value(e.m.exported); got != 3 {
		t.Errorf("%s = %v, want 3", MetricExported, got)
	}
	if got := value(e.m.dropped); got != 0 {
		t.Errorf("%s = %v, want 0", MetricDropped, got)
	}
}

// numberedCall is a sampled call whose span ID is n.
func numberedCall(n int) observe.Call {
	c := observe.Call{
		Direction: observe.Outbound, Protocol: observe.HTTP, Start: start, Duration: time.Millisecond,
		Source: "web", Destination: "api", Method: "GET", Path: "/", Status: 200, GRPCStatus: -1,
		Trace: observe.TraceIDs{TraceID: testTrace, Sampled: true},
	}
	binary.BigEndian.PutUint64(c.Trace.SpanID[:], uint64(n)+1)
	return c
}

// TestQueueBoundAndDropped holds the export goroutine inside its first
// request, fills the queue, and checks that exactly the calls beyond the
// queue's capacity are dropped and counted, and that the rest is exported
// once the receiver answers.
func TestQueueBoundAndDropped(t *testing.T) {
	const (
		queueSize = 8
		batchSize = 4
		extra     = 20 // calls ended while the export goroutine is held
	)
	r := newReceiver(t, true)
	e, _ := newTestExporter(t, Config{
		Endpoint: r.endpoint(), QueueSize: queueSize, BatchSize: batchSize,
		FlushInterval: time.Hour, // batches leave only when full, or at Close
	})
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	sent := 0
	for range batchSize {
		c := numberedCall(sent)
		e.End(&c)
		sent++
	}
	// One full batch is now in flight, held by the receiver.
	if n := r.waitRequest(); n != batchSize {
		t.Fatalf("first request carried %d spans, want %d", n, batchSize)
	}
	for range extra {
		c := numberedCall(sent)
		e.End(&c)
		sent++
	}
	inFlight := batchSize
	wantDropped := float64(sent - queueSize - inFlight)
	if got := value(e.m.queueFull); got != wantDropped {
		t.Fatalf("dropped (queue_full) = %v, want sent %d - capacity %d - in flight %d = %v", got, sent, queueSize, inFlight, wantDropped)
	}
	if got := float64(len(e.queue)); got != queueSize {
		t.Fatalf("queue holds %v spans, want its capacity %d", got, queueSize)
	}

	r.open()
	closeWithin(t, e)
	got := r.received()
	if len(got) != inFlight+queueSize {
		t.Fatalf("receiver got %d spans, want %d in flight + %d queued", len(got), inFlight, queueSize)
	}
	// The spans kept are the first ones: a full queue drops the newest.
	var ids []uint64
	for _, s := range got {
		ids = append(ids, binary.BigEndian.Uint64(s.span.SpanId))
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for i, id := range ids {
		if id != uint64(i)+1 {
			t.Fatalf("exported span IDs %v, want 1..%d", ids, inFlight+queueSize)
		}
	}
	if got := value(e.m.exported); got != float64(inFlight+queueSize) {
		t.Errorf("%s = %v, want %d", MetricExported, got, inFlight+queueSize)
	}
	if got := value(e.m.dropped); got != wantDropped {
		t.Errorf("%s = %v over all reasons, want %v", MetricDropped, got, wantDropped)
	}
}

// TestCloseDeadline: a receiver that never answers does not hold Close
// past its context; the spans not sent are counted as dropped.
func TestCloseDeadline(t *testing.T) {
	const batchSize = 4
	r := newReceiver(t, true) // never opened before Close
	e, _ := newTestExporter(t, Config{Endpoint: r.endpoint(), QueueSize: 16, BatchSize: batchSize, FlushInterval: time.Hour})
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range batchSize + 3 {
		c := numberedCall(i)
		e.End(&c)
	}
	r.waitRequest()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the deadline has passed
	err := e.Close(ctx)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), strconv.Itoa(batchSize+3)+" spans unsent") {
		t.Fatalf("Close past its deadline: %v, want context.Canceled and %d spans unsent", err, batchSize+3)
	}
	if got := value(e.m.closed); got != batchSize+3 {
		t.Errorf("dropped (closed) = %v, want %d", got, batchSize+3)
	}
	if got := value(e.m.exported); got != 0 {
		t.Errorf("%s = %v, want 0", MetricExported, got)
	}
	if err2 := e.Close(context.Background()); err2 != err {
		t.Errorf("second Close = %v, want the first's %v", err2, err)
	}
}

// TestExportFailureCounted: a receiver that refuses a batch costs its
// spans, counted as export_failed, and one export error.
func TestExportFailureCounted(t *testing.T) {
	e, _ := newTestExporter(t, Config{Endpoint: newRefusingReceiver(t), BatchSize: 2, FlushInterval: time.Hour})
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		c := numberedCall(i)
		e.End(&c)
	}
	closeWithin(t, e)
	if got := value(e.m.exportErrors); got != 1 {
		t.Errorf("%s = %v, want 1", MetricExportErrors, got)
	}
	if got := value(e.m.exportFailed); got != 2 {
		t.Errorf("dropped (export_failed) = %v, want 2", got)
	}
}

func TestEndAfterClose(t *testing.T) {
	r := newReceiver(t, false)
	e, _ := newTestExporter(t, Config{Endpoint: r.endpoint()})
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	closeWithin(t, e)
	c := numberedCall(0)
	e.End(&c) // must neither panic nor block
	if got := value(e.m.closed); got != 1 {
		t.Errorf("dropped (closed) = %v, want 1", got)
	}
	if err := e.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Errorf("Start after Close: %v, want ErrStarted", err)
	}
}

func TestStartTwice(t *testing.T) {
	r := newReceiver(t, false)
	e, _ := newTestExporter(t, Config{Endpoint: r.endpoint()})
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer closeWithin(t, e)
	if err := e.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: %v, want ErrStarted", err)
	}
}

// TestEndAllocatesNothing: the data path pays one branch for a call that
// is not sampled, and a copy into the queue (or a counter) for one that
// is; neither allocates.
func TestEndAllocatesNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sampled bool
		queue   int
	}{
		{"not sampled", false, 1},
		{"sampled, queued", true, 1000},
		{"sampled, queue full", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestExporter(t, Config{Endpoint: "http://127.0.0.1:4318", QueueSize: tc.queue})
			c := numberedCall(0)
			c.Trace.Sampled = tc.sampled
			e.End(&c) // a full queue from here on, in the last case
			if n := testing.AllocsPerRun(100, func() { e.End(&c) }); n != 0 {
				t.Errorf("End allocates %v times per call", n)
			}
			if !tc.sampled && len(e.queue) != 0 {
				t.Errorf("a call not sampled was queued")
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		field string // named in the error; "" for a valid config
		url   string
	}{
		{"no path gets /v1/traces", Config{Endpoint: "http://127.0.0.1:4318", Node: "n"}, "", "http://127.0.0.1:4318/v1/traces"},
		{"root path gets /v1/traces", Config{Endpoint: "https://otel.example:4318/", Node: "n"}, "", "https://otel.example:4318/v1/traces"},
		{"a path is kept", Config{Endpoint: "http://gw:8080/otlp/v1/traces", Node: "n"}, "", "http://gw:8080/otlp/v1/traces"},
		{"empty endpoint", Config{Node: "n"}, "endpoint", ""},
		{"grpc scheme", Config{Endpoint: "grpc://127.0.0.1:4317", Node: "n"}, "endpoint", ""},
		{"no host", Config{Endpoint: "http:///v1/traces", Node: "n"}, "endpoint", ""},
		{"no node", Config{Endpoint: "http://127.0.0.1:4318"}, "node", ""},
		{"negative queue", Config{Endpoint: "http://127.0.0.1:4318", Node: "n", QueueSize: -1}, "queue_size", ""},
		{"negative flush", Config{Endpoint: "http://127.0.0.1:4318", Node: "n", FlushInterval: -time.Second}, "flush_interval", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.withDefaults().validate()
			if tc.field == "" {
				if err != nil || got != tc.url {
					t.Fatalf("validate = %q, %v; want %q", got, err, tc.url)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("validate: %v, want ErrInvalidConfig naming %s", err, tc.field)
			}
			if _, err := New(tc.cfg, prometheus.NewRegistry(), nil); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New: %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, err := New(Config{Endpoint: "http://127.0.0.1:4318", Node: "n"}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.m.queueFull.Inc()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		got = append(got, mf.GetName())
	}
	want := append([]string(nil), MetricNames...)
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("metrics %v, want %v", got, want)
	}
	// A second exporter on the same registry is refused, not merged.
	if _, err := New(Config{Endpoint: "http://127.0.0.1:4318", Node: "n"}, reg, nil); err == nil {
		t.Fatal("a second exporter registered the same metrics without error")
	}
}

func BenchmarkEnd(b *testing.B) {
	for _, bc := range []struct {
		name              string
		sampled, parallel bool
	}{
		{"not_sampled", false, false},
		{"sampled", true, false},
		{"sampled_parallel", true, true},
	} {
		sampled := bc.sampled
		b.Run(bc.name, func(b *testing.B) {
			r := newBenchReceiver(b)
			e, err := New(Config{Endpoint: r, Node: "n", QueueSize: 2048}, prometheus.NewRegistry(), nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := e.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			c := numberedCall(0)
			c.Trace.Sampled = sampled
			b.ReportAllocs()
			b.ResetTimer()
			if bc.parallel {
				b.RunParallel(func(pb *testing.PB) {
					c := c
					for pb.Next() {
						e.End(&c)
					}
				})
			} else {
				for b.Loop() {
					e.End(&c)
				}
			}
			b.StopTimer()
			ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
			defer cancel()
			_ = e.Close(ctx)
			b.ReportMetric(value(e.m.queueFull), "dropped")
			b.ReportMetric(value(e.m.exported), "exported")
		})
	}
}

// value is the sum of the counters and gauges a collector holds.
func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 16)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var sum float64
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			panic(err)
		}
		sum += pb.GetCounter().GetValue() + pb.GetGauge().GetValue()
	}
	return sum
}
