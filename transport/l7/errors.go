package l7

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/meshwork/meshwork/transport/breaker"
	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/wire"
)

// ErrorHeader names the mesh as the source of an answer, and the reason.
const ErrorHeader = "X-Meshwork-Error"

// Reasons of the mesh's own answers, the values of ErrorHeader.
const (
	ReasonNoInstance       = "no_healthy_instance" // 503: nothing may take the request
	ReasonTimeout          = "timeout"             // 504: a Resilience timeout ran out
	ReasonDeadlineExceeded = "deadline_exceeded"   // 504: the caller's deadline ran out
	ReasonDenied           = "denied"              // 403: an intention denies the request
	ReasonConnectFailed    = "connect_failed"      // 502: the instance or its app could not be reached
	ReasonUpstreamReset    = "upstream_reset"      // 502: the exchange broke after it began
	ReasonBadRequest       = "bad_request"         // 400: the request cannot be carried
	ReasonFaultInjected    = "fault_injected"      // a Fault policy's status: the mesh aborted the request on purpose
	ReasonCircuitOpen      = "circuit_open"        // 503: the destination's circuit breaker is at a limit
)

// gRPC status codes of the mesh's answers.
const (
	grpcPermissionDenied = 7
	grpcDeadlineExceeded = 4
	grpcUnavailable      = 14
	grpcInternal         = 13
)

// meshError is an answer of the mesh instead of the app's.
type meshError struct {
	status int    // HTTP status
	reason string // one of the Reason constants
	detail string // for logs and the body
}

func (e *meshError) Error() string { return e.reason + ": " + e.detail }

// grpcCode maps the error to the gRPC status a gRPC caller gets.
func (e *meshError) grpcCode() int {
	switch e.status {
	case http.StatusForbidden:
		return grpcPermissionDenied
	case http.StatusGatewayTimeout:
		return grpcDeadlineExceeded
	case http.StatusBadRequest:
		return grpcInternal
	}
	return grpcUnavailable
}

// header returns the head of the answer: for gRPC a trailers-only answer
// (status 200, grpc-status in the head, no body), else the HTTP status.
func (e *meshError) header(grpc bool) (int, http.Header) {
	h := http.Header{ErrorHeader: {e.reason}}
	if grpc {
		h["Content-Type"] = []string{"application/grpc"}
		h["Grpc-Status"] = []string{strconv.Itoa(e.grpcCode())}
		h["Grpc-Message"] = []string{grpcMessage("meshwork: " + e.reason + ": " + e.detail)}
		return http.StatusOK, h
	}
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	return e.status, h
}

func (e *meshError) body() string { return "meshwork: " + e.reason + ": " + e.detail + "\n" }

// write answers the application with e.
func (e *meshError) write(w http.ResponseWriter, grpc bool) {
	status, h := e.header(grpc)
	wh := w.Header()
	for k := range wh {
		delete(wh, k)
	}
	for k, v := range h {
		wh[k] = v
	}
	if !grpc {
		wh["Content-Length"] = []string{strconv.Itoa(len(e.body()))}
	}
	w.WriteHeader(status)
	if !grpc {
		_, _ = w.Write([]byte(e.body()))
	}
}

// response is e as a response to write on a stream.
func (e *meshError) response(req *http.Request, grpc bool) *http.Response {
	status, h := e.header(grpc)
	resp := &http.Response{
		StatusCode: status, ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Request: req, Body: http.NoBody,
	}
	if !grpc {
		b := e.body()
		resp.ContentLength = int64(len(b))
		resp.Body = stringBody(b)
	}
	return resp
}

// grpcMessage percent-encodes s as grpc-message requires.
func grpcMessage(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteString("%" + strings.ToUpper(strconv.FormatUint(uint64(c)|0x100, 16)[1:]))
	}
	return b.String()
}

// isGRPC reports whether h is the head of a gRPC request.
func isGRPC(h http.Header) bool {
	ct := h.Get("Content-Type")
	return strings.HasPrefix(ct, "application/grpc")
}

// openError maps a failed Router.Open or stream status to the answer.
// budgetFromCaller says whether the request's deadline came from the
// caller (x-meshwork-deadline-ms, grpc-timeout) rather than a Resilience
// timeout.
func openError(ctx context.Context, err error, budgetFromCaller bool) *meshError {
	if expired(ctx) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return timeoutError(budgetFromCaller, err.Error())
	}
	var re *tunnel.RefusedError
	switch {
	case errors.Is(err, tunnel.ErrNoInstance):
		return &meshError{http.StatusServiceUnavailable, ReasonNoInstance, err.Error()}
	case errors.Is(err, breaker.ErrCircuitOpen):
		return &meshError{http.StatusServiceUnavailable, ReasonCircuitOpen, err.Error()}
	case errors.As(err, &re) && re.Code == wire.CodeUnauthorized:
		return &meshError{http.StatusForbidden, ReasonDenied, re.Reason}
	case errors.As(err, &re) && re.Code == wire.CodeDeadlineExceeded:
		return timeoutError(true, re.Reason)
	case errors.As(err, &re) && (re.Code == wire.CodeNoSuchService || re.Code == wire.CodeNoSuchPort ||
		re.Code == wire.CodeOverloaded || re.Code == wire.CodeShuttingDown):
		return &meshError{http.StatusServiceUnavailable, ReasonNoInstance, err.Error()}
	}
	return &meshError{http.StatusBadGateway, ReasonConnectFailed, err.Error()}
}

// timeoutError is the answer to a request whose budget ran out.
func timeoutError(budgetFromCaller bool, detail string) *meshError {
	if budgetFromCaller {
		return &meshError{http.StatusGatewayTimeout, ReasonDeadlineExceeded, detail}
	}
	return &meshError{http.StatusGatewayTimeout, ReasonTimeout, detail}
}

// appError maps a failed round trip to the local app.
func appError(ctx context.Context, err error, budgetFromCaller bool) *meshError {
	if expired(ctx) {
		return timeoutError(budgetFromCaller, "the app did not answer in time")
	}
	var op *net.OpError
	var ue *url.Error
	if errors.As(err, &op) && op.Op == "dial" {
		return &meshError{http.StatusBadGateway, ReasonConnectFailed, "dial the app: " + op.Err.Error()}
	}
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &meshError{http.StatusBadGateway, ReasonUpstreamReset, "the app: " + err.Error()}
}

// stringBody is a response body of a constant string.
func stringBody(s string) *strBody { return &strBody{Reader: strings.NewReader(s)} }

type strBody struct{ *strings.Reader }

func (*strBody) Close() error { return nil }
