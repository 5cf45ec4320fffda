package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/internal/httpjson"
)

// TestHostHeader: requests addressed to a name other than localhost are
// refused (DNS rebinding); by IP address or localhost they are served.
func TestHostHeader(t *testing.T) {
	h := newHarness(t, Config{})
	tests := []struct {
		host string
		want int
	}{
		{"127.0.0.1:8500", http.StatusOK},
		{"[::1]:8500", http.StatusOK},
		{"localhost:8500", http.StatusOK},
		{"LOCALHOST", http.StatusOK},
		{"10.0.0.5", http.StatusOK},
		{"evil.example:8500", http.StatusForbidden},
		{"evil.example", http.StatusForbidden},
		{"localhost.evil.example", http.StatusForbidden},
		{"127.0.0.1.nip.io", http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, h.base+"/v1/agent/self", nil)
			req.Host = tc.host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var eb httpjson.ErrorBody
			_ = json.NewDecoder(resp.Body).Decode(&eb)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("Host %q: status %d, want %d", tc.host, resp.StatusCode, tc.want)
			}
			if tc.want == http.StatusForbidden && eb.Code != httpjson.CodeHostNotAllowed {
				t.Fatalf("Host %q: code %q, want %q", tc.host, eb.Code, httpjson.CodeHostNotAllowed)
			}
		})
	}
}

// TestSlowBodyTimesOut: a client that sends its headers and then trickles
// its body is answered, and its connection released, once BodyTimeout has
// passed; a request whose body arrived in time is then served normally on
// a new connection, and a handler that answers long after reading its body
// is not cut by the deadline.
func TestSlowBodyTimesOut(t *testing.T) {
	h := newHarness(t, Config{BodyTimeout: 200 * time.Millisecond})
	addr := strings.TrimPrefix(h.base, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "PUT /v1/agent/service/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{")
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second)) // a bound on the test, not the behaviour
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a request whose body never came: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
	if code, msg, _ := h.raw(t, http.MethodPut, "/v1/agent/service/register", `{"name":"web","port":8080}`); code != http.StatusOK {
		t.Fatalf("register after the slow client: %d %s", code, msg)
	}
}

// TestBodyDeadlineLiftedAfterBody: a handler that reads its body and then
// answers well after BodyTimeout (as a forwarded write that waits out an
// election does) keeps its request context and is answered.
func TestBodyDeadlineLiftedAfterBody(t *testing.T) {
	h := newHarness(t, Config{BodyTimeout: 100 * time.Millisecond})
	if err := h.srv.Mount("PUT /v1/test/slow-answer", acl.Open("a test route"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(500 * time.Millisecond): // the slow part of the scenario: past the body deadline
			w.WriteHeader(http.StatusNoContent)
		case <-r.Context().Done():
			t.Errorf("request context ended while the handler worked: %v", context.Cause(r.Context()))
		}
	})); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPut, h.base+"/v1/test/slow-answer", strings.NewReader("{}"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d, want 204", resp.StatusCode)
	}
}
