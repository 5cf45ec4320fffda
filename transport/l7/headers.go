package l7

import (
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// hopHeaders are the connection-specific fields of RFC 9110 7.6.1, never
// forwarded from one hop to the next.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// removeHopHeaders deletes the connection-specific fields of h, those the
// Connection field names included. A gRPC request keeps "te: trailers",
// which gRPC servers require and HTTP/2 allows.
func removeHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = textproto.TrimString(name); name != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(name))
			}
		}
	}
	te := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	for _, k := range hopHeaders {
		delete(h, k)
	}
	if te {
		h["Te"] = []string{"trailers"}
	}
}

// isUpgrade reports whether r asks to switch protocols (WebSocket, ...).
func isUpgrade(h http.Header) bool {
	return httpguts.HeaderValuesContainsToken(h["Connection"], "upgrade") && len(h["Upgrade"]) > 0
}

// keepUserAgent stops net/http from adding its own User-Agent to a request
// that had none: an empty value writes nothing.
func keepUserAgent(h http.Header) {
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""}
	}
}
