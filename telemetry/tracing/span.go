package tracing

import (
	"net"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.38.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshwork/meshwork/transport/observe"
)

// The attributes of the mesh's own, beside the semantic conventions'.
const (
	AttrSource              = attribute.Key("meshwork.source")
	AttrDestination         = attribute.Key("meshwork.destination")
	AttrSourceIdentity      = attribute.Key("meshwork.source_identity")
	AttrDestinationIdentity = attribute.Key("meshwork.destination_identity")
	AttrRoute               = attribute.Key("meshwork.route")
	AttrInstance            = attribute.Key("meshwork.instance")
	AttrMeshError           = attribute.Key("meshwork.mesh_error")
	AttrAttempts            = attribute.Key("meshwork.attempts")
	AttrRequestID           = attribute.Key("meshwork.request_id")
	AttrBytesIn             = attribute.Key("meshwork.bytes_in")
	AttrBytesOut            = attribute.Key("meshwork.bytes_out")

	// Of the resource: the agent's node, and the local service the span
	// is recorded for (the caller's outbound, the callee's inbound).
	AttrNode    = attribute.Key("meshwork.node")
	AttrService = attribute.Key("meshwork.service")
)

// ServiceName is the resource's service.name of every span: the agent is
// the process that records them. The application the span belongs to is
// the resource's meshwork.service.
const ServiceName = "meshwork"

// scopeName names the instrumentation scope of the spans.
const scopeName = "github.com/meshwork/meshwork/telemetry/tracing"

// SchemaURL is the version of the OpenTelemetry semantic conventions the
// spans follow: 1.38, the last with rpc.system and rpc.grpc.status_code,
// which Jaeger and the collectors of today read.
const SchemaURL = semconv.SchemaURL

// spanOf makes the span of a finished call. It runs on the export
// goroutine, never on the data path.
func spanOf(c *observe.Call, res *sdkresource.Resource, sc instrumentation.Scope) tracetest.SpanStub {
	flags := trace.TraceFlags(0)
	if c.Trace.Sampled {
		flags = trace.FlagsSampled
	}
	s := tracetest.SpanStub{
		Name: spanName(c),
		SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
			TraceID:    c.Trace.TraceID,
			SpanID:     c.Trace.SpanID,
			TraceFlags: flags,
		}),
		SpanKind:             trace.SpanKindClient,
		StartTime:            c.Start,
		EndTime:              c.Start.Add(c.Duration),
		Attributes:           attributesOf(c),
		Resource:             res,
		InstrumentationScope: sc,
	}
	if c.Direction == observe.Inbound {
		s.SpanKind = trace.SpanKindServer
	}
	// The parent is another process's span: the app's, or the other
	// agent's. A zero ParentID leaves Parent invalid: the span is a root.
	if c.Trace.ParentID != ([8]byte{}) {
		s.Parent = trace.NewSpanContext(trace.SpanContextConfig{
			TraceID:    c.Trace.TraceID,
			SpanID:     c.Trace.ParentID,
			TraceFlags: flags,
			Remote:     true,
		})
	}
	if c.Result() == observe.Failure {
		s.Status = sdktrace.Status{Code: codes.Error, Description: failureOf(c)}
	}
	return s
}

// spanName follows the semantic conventions, with the path standing in
// for the route template the mesh does not know: "GET /orders",
// "pkg.Service/Method" for gRPC, "tcp api" for a connection.
func spanName(c *observe.Call) string {
	switch c.Protocol {
	case observe.GRPC:
		if svc, m, ok := grpcMethod(c.Path); ok {
			return svc + "/" + m
		}
	case observe.TCP:
		return "tcp " + c.Destination
	}
	method, _ := httpMethod(c.Method)
	if method == "_OTHER" {
		method = "HTTP"
	}
	if p := urlPath(c.Path); p != "" {
		return method + " " + p
	}
	return method
}

// attributesOf lists what the span tells, under the names of the semantic
// conventions where they have one.
func attributesOf(c *observe.Call) []attribute.KeyValue {
	a := make([]attribute.KeyValue, 0, 20)
	a = append(a, AttrSource.String(c.Source), AttrDestination.String(c.Destination))
	if c.Protocol == observe.TCP {
		a = append(a,
			semconv.NetworkTransportTCP,
			semconv.ServerAddress(c.Destination),
			AttrBytesIn.Int64(c.BytesIn),
			AttrBytesOut.Int64(c.BytesOut),
		)
	} else {
		host, port := serverOf(c)
		a = append(a, semconv.NetworkProtocolName("http"), semconv.ServerAddress(host))
		if port > 0 {
			a = append(a, semconv.ServerPort(port))
		}
		method, original := httpMethod(c.Method)
		a = append(a, semconv.HTTPRequestMethodKey.String(method))
		if original != "" {
			a = append(a, semconv.HTTPRequestMethodOriginal(original))
		}
		if p := urlPath(c.Path); p != "" {
			a = append(a, semconv.URLPath(p))
		}
		if c.Status != 0 {
			a = append(a, semconv.HTTPResponseStatusCode(c.Status))
		}
		a = append(a, semconv.HTTPRequestBodySize(int(c.BytesIn)), semconv.HTTPResponseBodySize(int(c.BytesOut)))
		if c.UserAgent != "" {
			a = append(a, semconv.UserAgentOriginal(c.UserAgent))
		}
		if c.RequestID != "" {
			a = append(a, AttrRequestID.String(c.RequestID))
		}
		if c.Protocol == observe.GRPC {
			a = append(a, semconv.RPCSystemGRPC)
			if svc, m, ok := grpcMethod(c.Path); ok {
				a = append(a, semconv.RPCService(svc), semconv.RPCMethod(m))
			}
			if c.GRPCStatus >= 0 {
				a = append(a, semconv.RPCGRPCStatusCodeKey.Int(c.GRPCStatus))
			}
		}
	}
	if c.Route != "" {
		a = append(a, AttrRoute.String(c.Route))
	}
	if c.Instance != "" {
		a = append(a, AttrInstance.String(c.Instance))
	}
	if c.SourceIdentity != "" {
		a = append(a, AttrSourceIdentity.String(c.SourceIdentity))
	}
	if c.DestinationIdentity != "" {
		a = append(a, AttrDestinationIdentity.String(c.DestinationIdentity))
	}
	if c.MeshError != "" {
		a = append(a, AttrMeshError.String(c.MeshError))
	}
	if c.Attempts > 0 {
		a = append(a, AttrAttempts.Int(c.Attempts))
	}
	if c.Result() == observe.Failure {
		a = append(a, semconv.ErrorTypeKey.String(errorType(c)))
	}
	return a
}

// errorType is the class of a failure, for error.type: the mesh's reason,
// else the gRPC or HTTP status code.
func errorType(c *observe.Call) string {
	switch {
	case c.MeshError != "":
		return c.MeshError
	case c.Protocol == observe.GRPC && c.GRPCStatus >= 0 && c.Status < 500:
		return strconv.Itoa(c.GRPCStatus)
	case c.Status != 0:
		return strconv.Itoa(c.Status)
	}
	return "_OTHER"
}

// failureOf is the status description of a failed call.
func failureOf(c *observe.Call) string {
	switch {
	case c.MeshError != "":
		return "mesh: " + c.MeshError
	case c.Protocol == observe.GRPC && c.GRPCStatus >= 0 && c.Status < 500:
		return "grpc-status " + strconv.Itoa(c.GRPCStatus)
	}
	return "HTTP " + strconv.Itoa(c.Status)
}

// serverOf is the host and port the caller addressed (the Authority), or
// the destination service when there is none.
func serverOf(c *observe.Call) (string, int) {
	if c.Authority == "" {
		return c.Destination, 0
	}
	host, port, err := net.SplitHostPort(c.Authority)
	if err != nil {
		return c.Authority, 0
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		return host, 0
	}
	return host, p
}

// knownMethods are the methods the semantic conventions name; any other
// is reported as _OTHER, with the method in http.request.method_original,
// so that a client cannot make span names of its choosing.
var knownMethods = map[string]bool{
	"CONNECT": true, "DELETE": true, "GET": true, "HEAD": true, "OPTIONS": true,
	"PATCH": true, "POST": true, "PUT": true, "TRACE": true, "QUERY": true,
}

// httpMethod is the http.request.method of m, and m itself when that is
// _OTHER.
func httpMethod(m string) (method, original string) {
	if knownMethods[m] {
		return m, ""
	}
	if m == "" {
		return "_OTHER", ""
	}
	return "_OTHER", m
}

// urlPath is the path without its query.
func urlPath(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

// grpcMethod splits a gRPC path, "/pkg.Service/Method".
func grpcMethod(path string) (service, method string, ok bool) {
	p, found := strings.CutPrefix(urlPath(path), "/")
	if !found {
		return "", "", false
	}
	service, method, ok = strings.Cut(p, "/")
	if !ok || service == "" || method == "" || strings.Contains(method, "/") {
		return "", "", false
	}
	return service, method, true
}
