package tracing

import (
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"

	"github.com/meshwork/meshwork/transport/observe"
)

func TestSpanName(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    observe.Call
		want string
	}{
		{"http", observe.Call{Protocol: observe.HTTP, Method: "POST", Path: "/orders"}, "POST /orders"},
		{"http query cut", observe.Call{Protocol: observe.HTTP, Method: "GET", Path: "/a?token=secret"}, "GET /a"},
		{"http no path", observe.Call{Protocol: observe.HTTP, Method: "GET"}, "GET"},
		{"http unknown method", observe.Call{Protocol: observe.HTTP, Method: "FOO", Path: "/x"}, "HTTP /x"},
		{"grpc", observe.Call{Protocol: observe.GRPC, Method: "POST", Path: "/pkg.Svc/Do"}, "pkg.Svc/Do"},
		{"grpc bad path", observe.Call{Protocol: observe.GRPC, Method: "POST", Path: "/nomethod"}, "POST /nomethod"},
		{"tcp", observe.Call{Protocol: observe.TCP, Destination: "db"}, "tcp db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := spanName(&tc.c); got != tc.want {
				t.Errorf("spanName = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestUnknownMethodKeptAsOriginal(t *testing.T) {
	c := observe.Call{Protocol: observe.HTTP, Method: "PROPFIND", Path: "/", GRPCStatus: -1}
	attrs := map[attribute.Key]string{}
	for _, kv := range attributesOf(&c) {
		attrs[kv.Key] = kv.Value.Emit()
	}
	if attrs["http.request.method"] != "_OTHER" || attrs["http.request.method_original"] != "PROPFIND" {
		t.Fatalf("method attributes %q, %q; want _OTHER, PROPFIND", attrs["http.request.method"], attrs["http.request.method_original"])
	}
}

// FuzzSpanOf feeds the parts of a span that come from an application's
// request (method, path, authority) to the span builder: it must not
// panic, must name every span, and must keep the IDs it was given.
func FuzzSpanOf(f *testing.F) {
	f.Add("GET", "/orders/7?x=1", "api.service.mesh:8080", uint8(1))
	f.Add("POST", "/pkg.Svc/Method", "stock", uint8(2))
	f.Add("", "", "", uint8(0))
	f.Add("FOO", "//", "[::1]:99999", uint8(1))
	f.Add("GET", "/a/b/c", ":", uint8(2))
	f.Fuzz(func(t *testing.T, method, path, authority string, proto uint8) {
		c := observe.Call{
			Protocol: []observe.Protocol{observe.TCP, observe.HTTP, observe.GRPC}[proto%3],
			Method:   method, Path: path, Authority: authority, Destination: "d", GRPCStatus: -1,
			Trace: observe.TraceIDs{TraceID: testTrace, SpanID: clientSpan, ParentID: appSpan, Sampled: true},
		}
		s := spanOf(&c, nil, scope(""))
		if s.Name == "" {
			t.Fatal("empty span name")
		}
		if strings.Contains(s.Name, "?") {
			t.Fatalf("span name %q keeps the query", s.Name)
		}
		if s.SpanContext.TraceID() != testTrace || s.SpanContext.SpanID() != clientSpan || s.Parent.SpanID() != appSpan {
			t.Fatalf("IDs changed: %v parent %v", s.SpanContext, s.Parent)
		}
	})
}
