package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
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

// hungListener accepts connections and never answers on them, as a hung
// agent does. It closes them at the end of the test.
func hungListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

// TestClientTimeout: an agent that takes the request and never answers is
// abandoned after the timeout with ErrTimeout (a read), or with
// ErrOutcomeUnknown as well (a write, which may have been applied); a
// stream is abandoned when its answer does not begin in time.
func TestClientTimeout(t *testing.T) {
	c := NewClient(hungListener(t)).WithTimeout(200 * time.Millisecond)
	ctx := context.Background()

	_, err := c.Do(ctx, "GET", "/v1/agent/members", nil, nil, nil)
	if !errors.Is(err, ErrTimeout) || errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "200ms") {
		t.Fatalf("read from a hung agent = %v, want ErrTimeout naming the timeout", err)
	}
	_, err = c.DoKeyed(ctx, "PUT", "/v1/policy", nil, "k", map[string]int{"a": 1}, nil)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("write to a hung agent = %v, want ErrTimeout and ErrOutcomeUnknown", err)
	}
	if _, err := c.Stream(ctx, "/v1/agent/monitor", nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("stream from a hung agent = %v, want ErrTimeout", err)
	}

	// The caller's own cancellation is its own error, not a timeout.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Do(cctx, "GET", "/v1/agent/members", nil, nil, nil); !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Fatalf("cancelled read = %v, want context.Canceled", err)
	}
}

// TestClientBlockingReadBudget: a blocking read gets the timeout on top of
// the wait it asks for (the agent's default and cap when it asks none or
// too much, with the agent's jitter); other requests get the timeout.
func TestClientBlockingReadBudget(t *testing.T) {
	c := NewClient("127.0.0.1:1").WithTimeout(30 * time.Second)
	tests := []struct {
		name  string
		query url.Values
		want  time.Duration
	}{
		{"not blocking", nil, 30 * time.Second},
		{"index 0 is not blocking", url.Values{"index": {"0"}, "wait": {"1m"}}, 30 * time.Second},
		{"wait given", url.Values{"index": {"7"}, "wait": {"16s"}}, 30*time.Second + 17*time.Second},
		{"agent default", url.Values{"index": {"7"}}, 30*time.Second + DefaultBlockingWait + DefaultBlockingWait/16},
		{"agent cap", url.Values{"index": {"7"}, "wait": {"1h"}}, 30*time.Second + MaxBlockingWait + MaxBlockingWait/16},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.requestBudget(tc.query); got != tc.want {
				t.Fatalf("budget = %s, want %s", got, tc.want)
			}
		})
	}
	if got := c.WithTimeout(0).requestBudget(url.Values{"index": {"7"}}); got != 0 {
		t.Fatalf("no timeout: budget %s, want none", got)
	}
}

// TestClientBlockingReadOutlastsTimeout: a blocking read that the agent
// answers after longer than the timeout, but within its wait, succeeds.
func TestClientBlockingReadOutlastsTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("index") != "" {
			<-release
		}
		_, _ = w.Write([]byte(`[]`))
	}))
	defer srv.Close()
	c := NewClient(srv.URL).WithTimeout(100 * time.Millisecond)
	// The answer comes once a read without index has timed out: the
	// blocking read was held past the timeout and still answered.
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.CatalogServices(context.Background(), &QueryOptions{Index: 5, Wait: time.Minute})
		errc <- err
	}()
	hung := NewClient(hungListener(t)).WithTimeout(100 * time.Millisecond)
	if _, err := hung.Self(context.Background()); !errors.Is(err, ErrTimeout) {
		t.Fatalf("hung agent: %v", err)
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatalf("blocking read held past the timeout: %v", err)
	}
}
