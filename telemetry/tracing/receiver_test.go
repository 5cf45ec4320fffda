package tracing

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// eventTimeout bounds every wait for something the test caused.
const eventTimeout = 10 * time.Second

// receiver is an OTLP/HTTP trace receiver on loopback: it decodes each
// request's protobuf and keeps its spans. With a gate, the first request
// is held until the gate is opened, so that a test can hold the export
// goroutine still.
type receiver struct {
	t       *testing.T
	srv     *httptest.Server
	arrived chan int // the span count of each request, as it arrives
	gate    chan struct{}

	mu      sync.Mutex
	spans   []receivedSpan
	paths   []string
	handled int
}

// receivedSpan is one span with the resource it came under.
type receivedSpan struct {
	span     *tracepb.Span
	resource map[string]string
	scope    string
}

func newReceiver(t *testing.T, gated bool) *receiver {
	t.Helper()
	r := &receiver{t: t, arrived: make(chan int, 100)}
	if gated {
		r.gate = make(chan struct{})
	}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(func() {
		r.open()
		r.srv.Close()
	})
	return r
}

// endpoint is the URL an Exporter is given: without a path, as an
// operator writes it.
func (r *receiver) endpoint() string { return r.srv.URL }

// open lets held requests through; it may be called more than once.
func (r *receiver) open() {
	if r.gate == nil {
		return
	}
	select {
	case <-r.gate:
	default:
		close(r.gate)
	}
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		r.t.Errorf("request Content-Type %q, want application/x-protobuf", ct)
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &msg); err != nil {
		r.t.Errorf("request is not an ExportTraceServiceRequest: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var got []receivedSpan
	for _, rs := range msg.ResourceSpans {
		res := attrMap(rs.GetResource().GetAttributes())
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				got = append(got, receivedSpan{span: s, resource: res, scope: ss.GetScope().GetName()})
			}
		}
	}
	r.mu.Lock()
	first := r.handled == 0
	r.handled++
	r.spans = append(r.spans, got...)
	r.paths = append(r.paths, req.URL.Path)
	r.mu.Unlock()
	r.arrived <- len(got)
	if first && r.gate != nil {
		select {
		case <-r.gate:
		case <-req.Context().Done():
			return
		}
	}
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// waitRequest waits for the next request and returns its span count.
func (r *receiver) waitRequest() int {
	r.t.Helper()
	select {
	case n := <-r.arrived:
		return n
	case <-time.After(eventTimeout):
		r.t.Fatalf("no export request within %s", eventTimeout)
		return 0
	}
}

func (r *receiver) received() []receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedSpan(nil), r.spans...)
}

// attrMap flattens attributes to strings, as they are compared.
func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = anyString(kv.Value)
	}
	return m
}

func anyString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_BoolValue:
		if x.BoolValue {
			return "true"
		}
		return "false"
	}
	return v.String()
}

// newBenchReceiver is a receiver that reads and discards every request:
// it returns its URL.
func newBenchReceiver(tb testing.TB) string {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		w.WriteHeader(http.StatusOK)
	}))
	tb.Cleanup(srv.Close)
	return srv.URL
}

// newRefusingReceiver answers every request 400 Bad Request, which the
// exporter does not retry: it returns its URL.
func newRefusingReceiver(tb testing.TB) string {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		http.Error(w, "refused by the test", http.StatusBadRequest)
	}))
	tb.Cleanup(srv.Close)
	return srv.URL
}
