package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestClientErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Header().Set(IndexHeader, "42")
			_, _ = w.Write([]byte(`{"name":"web"}`))
		case "/bad":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"service \"x\": port 70000 out of range"}`))
		}
	}))
	defer srv.Close()
	c := NewClient(srv.URL)

	var out struct{ Name string }
	meta, err := c.Do(context.Background(), "GET", "/ok", nil, nil, &out)
	if err != nil || out.Name != "web" || meta.Index != 42 {
		t.Fatalf("Do(/ok) = %+v, %+v, %v", out, meta, err)
	}

	_, err = c.Do(context.Background(), "GET", "/bad", nil, nil, nil)
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(apiErr.Message, "port 70000") {
		t.Fatalf("Do(/bad) error = %v, want an *Error carrying the message", err)
	}
}

func TestClientUnreachableIsOneLine(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now

	_, err = NewClient(addr).Do(context.Background(), "GET", "/v1/agent/self", nil, nil, nil)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("error = %v, want ErrUnreachable", err)
	}
	msg := err.Error()
	if strings.Count(msg, ":") > 3 || !strings.Contains(msg, "connection refused") {
		t.Fatalf("message %q is not one plain line naming the cause", msg)
	}
}

// TestClientWriteOutcome checks that DoKeyed sends the key, and that a
// write whose fate is unknown matches ErrOutcomeUnknown, whether the agent
// said so or the connection broke after the request left; a refusal and an
// agent nobody could reach do not.
func TestClientWriteOutcome(t *testing.T) {
	var gotKey string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotKey = r.Header.Get(IdempotencyKeyHeader)
		w.Header().Set(IdempotencyKeyHeader, gotKey)
		switch r.URL.Path {
		case "/unknown":
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":"outcome unknown: leader lost","code":"outcome_unknown","idempotency_key":"` + gotKey + `"}`))
		case "/conflict":
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"error":"compare-and-set conflict","code":"cas_conflict"}`))
		case "/hangup":
			// The request arrived; the agent dies before answering.
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		default:
			_, _ = w.Write([]byte(`{}`))
		}
	}))
	defer srv.Close()
	c := NewClient(srv.URL)
	ctx := context.Background()

	meta, err := c.DoKeyed(ctx, "PUT", "/ok", nil, "k-1", map[string]int{"a": 1}, nil)
	if err != nil || gotKey != "k-1" || meta.IdempotencyKey != "k-1" {
		t.Fatalf("DoKeyed = %+v, %v; server saw key %q", meta, err, gotKey)
	}
	_, err = c.DoKeyed(ctx, "PUT", "/unknown", nil, "k-2", map[string]int{"a": 1}, nil)
	var apiErr *Error
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.As(err, &apiErr) || apiErr.Code != CodeOutcomeUnknown || apiErr.IdempotencyKey != "k-2" {
		t.Fatalf("outcome_unknown answer = %v (%+v), want ErrOutcomeUnknown with its key", err, apiErr)
	}
	if _, err := c.DoKeyed(ctx, "PUT", "/conflict", nil, "k-3", nil, nil); errors.Is(err, ErrOutcomeUnknown) || !errors.As(err, &apiErr) || apiErr.Code != "cas_conflict" {
		t.Fatalf("conflict = %v, want a definite *Error", err)
	}
	if _, err := c.DoKeyed(ctx, "PUT", "/hangup", nil, "k-4", map[string]int{"a": 1}, nil); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("connection lost after the request = %v, want ErrOutcomeUnknown", err)
	}
	if _, err := c.Do(ctx, "GET", "/hangup", nil, nil, nil); errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrUnreachable) {
		t.Fatalf("read with the connection lost = %v, want ErrUnreachable", err)
	}
}
