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
