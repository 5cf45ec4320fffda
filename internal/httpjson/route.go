package httpjson

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// NoRoute answers a request that no pattern of mux matched: 405 with
// Allow when the path exists for other methods, else 404, both as
// ErrorBody. ServeMux's own answers are plain text.
func NoRoute(mux *http.ServeMux, w http.ResponseWriter, r *http.Request) {
	probe := &headerRecorder{h: http.Header{}}
	mux.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		allow := probe.h.Get("Allow")
		w.Header().Set("Allow", allow)
		CodedError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed, fmt.Errorf("method %s is not allowed on %s; use %s", r.Method, r.URL.Path, allow))
		return
	}
	CodedError(w, http.StatusNotFound, CodeUnknownEndpoint, fmt.Errorf("no endpoint %s %s", r.Method, r.URL.Path))
}

// Mux serves mux, answering what no pattern matches with NoRoute: for the
// components that serve their routes on a mux of their own (tests, tools).
func Mux(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			NoRoute(mux, w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// headerRecorder captures what the mux's own 404/405 handler would answer.
type headerRecorder struct {
	h      http.Header
	status int
}

func (r *headerRecorder) Header() http.Header         { return r.h }
func (r *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *headerRecorder) WriteHeader(code int)        { r.status = code }

// DeprecatedSince is when the routes kept as deprecated aliases in this
// release were deprecated: the value of their Deprecation header.
var DeprecatedSince = time.Date(2026, time.December, 7, 0, 0, 0, 0, time.UTC)

// DeprecationHeader is the header that marks the answer of a deprecated
// route (RFC 9745): "@" and the Unix time it was deprecated.
const DeprecationHeader = "Deprecation"

// Deprecated is the handler of a route kept for one release as an alias
// of another, its successor ("PUT /v1/ca/token"): it serves Handler, and
// marks every answer with the Deprecation header. The HTTP API recognises
// it when it is mounted: it lists the route as deprecated, marks even its
// refusals, and counts and logs its callers, so that operators can tell
// whether anything still calls it before the release that removes it.
type Deprecated struct {
	Successor string
	Handler   http.Handler
}

// ServeHTTP marks the answer and serves d.Handler.
func (d Deprecated) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	MarkDeprecated(w.Header())
	d.Handler.ServeHTTP(w, r)
}

// MarkDeprecated sets the Deprecation header of an answer.
func MarkDeprecated(h http.Header) {
	h.Set(DeprecationHeader, "@"+strconv.FormatInt(DeprecatedSince.Unix(), 10))
}
