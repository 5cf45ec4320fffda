package l7

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/meshwork/meshwork/transport/observe"
)

// records keeps a copy of each record it is handed.
type records struct {
	mu    sync.Mutex
	begun int
	ended []observe.Call
}

func (r *records) Begin(*observe.Call) { r.mu.Lock(); r.begun++; r.mu.Unlock() }
func (r *records) End(c *observe.Call) { r.mu.Lock(); r.ended = append(r.ended, *c); r.mu.Unlock() }

// TestRecordsOfMeshAnswers: a request that cannot be routed and a request
// that cannot be read each leave one record, with the mesh's reason.
func TestRecordsOfMeshAnswers(t *testing.T) {
	rec := &records{}
	p, err := New(Config{}, Deps{Observer: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	app, agent := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		hl := limitHead(agent, -1)
		p.serveH1(context.Background(), agent, hl, bufio.NewReader(hl), nowhere{})
		agent.Close()
	}()
	go func() {
		io.WriteString(app, "GET /a?q=1 HTTP/1.1\r\nHost: web\r\nUser-Agent: t/1\r\nX-Request-Id: r1\r\n"+
			"Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n")
		io.WriteString(app, "\x00garbage\r\n\r\n")
	}()
	br := bufio.NewReader(app)
	for _, want := range []int{http.StatusServiceUnavailable, http.StatusBadRequest} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("answer %d, want %d", resp.StatusCode, want)
		}
	}
	app.Close()
	<-done
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.begun != 2 || len(rec.ended) != 2 {
		t.Fatalf("%d records begun, %d ended; want 2 each", rec.begun, len(rec.ended))
	}
	o := rec.ended[0]
	if o.Direction != observe.Outbound || o.Protocol != observe.HTTP || o.Destination != "web" || o.Method != "GET" ||
		o.Path != "/a" || o.Authority != "web" || o.UserAgent != "t/1" || o.RequestID != "r1" ||
		o.Status != http.StatusServiceUnavailable || o.MeshError != ReasonNoInstance || o.Attempts != 1 ||
		o.GRPCStatus != -1 || o.Result() != observe.Failure || o.Duration <= 0 || o.BytesOut == 0 {
		t.Errorf("unroutable request's record: %+v", o)
	}
	if o.Trace.TraceID[0] != 0x0a || o.Trace.ParentID[0] != 0xb7 || !o.Trace.Sampled || o.Trace.SpanID == [8]byte{} {
		t.Errorf("the app's trace is not continued: %+v", o.Trace)
	}
	if b := rec.ended[1]; b.Status != http.StatusBadRequest || b.MeshError != ReasonBadRequest || b.Destination != "web" {
		t.Errorf("unreadable request's record: %+v", b)
	}
}

func TestHeadEnd(t *testing.T) {
	answer := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
	for split := 0; split <= len(answer); split++ {
		var h headEnd
		got := h.skip([]byte(answer[:split])) + h.skip([]byte(answer[split:]))
		if got != 5 {
			t.Errorf("split at %d: %d bytes after the head, want 5", split, got)
		}
	}
	var h headEnd
	if got := h.skip([]byte("HTTP/1.1 200 OK\r\r\n\r\nab")); got != 2 {
		t.Errorf("head ending after a stray CR: %d bytes after it, want 2", got)
	}
}

func TestMeshErrorIn(t *testing.T) {
	for _, tc := range []struct{ name, answer, want string }{
		{"denied", "HTTP/1.1 403 Forbidden\r\nX-Meshwork-Error: denied\r\nContent-Length: 3\r\n\r\nabc", ReasonDenied},
		{"app's own error", "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", ""},
		{"unknown reason", "HTTP/1.1 503 x\r\nX-Meshwork-Error: my-app-said-so\r\n\r\n", "other"},
		{"in the body", "HTTP/1.1 500 x\r\nContent-Length: 30\r\n\r\n\r\nX-Meshwork-Error: denied\r\n", ""},
	} {
		br := bufio.NewReader(strings.NewReader(tc.answer))
		br.Peek(1)
		if got := meshErrorIn(br); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestParseGRPCStatus(t *testing.T) {
	for s, want := range map[string]int{"0": 0, "14": 14, "999": 999, "": -1, "1000": -1, "-1": -1, "1a": -1, " 2": -1} {
		if got := parseGRPCStatus(s); got != want {
			t.Errorf("parseGRPCStatus(%q) = %d, want %d", s, got, want)
		}
	}
}

// FuzzAnswerRecord feeds what a peer agent (or an app behind it) could
// answer to the readers of the records: the end of the head, the mesh's
// reason and the grpc-status. Never a panic; the head's end agrees with a
// plain search wherever the bytes are split; a reason is one of a known
// few; a status is what strconv reads of at most 3 digits.
func FuzzAnswerRecord(f *testing.F) {
	f.Add([]byte("HTTP/1.1 403 Forbidden\r\nX-Meshwork-Error: denied\r\n\r\nbody"), 7)
	f.Add([]byte("HTTP/1.1 200 OK\r\n\r\n"), 0)
	f.Add([]byte("\r\r\n\r\n\r\n"), 3)
	f.Add([]byte("13"), 1)
	f.Fuzz(func(t *testing.T, b []byte, split int) {
		if split < 0 || split > len(b) {
			split = len(b) / 2
		}
		var h headEnd
		got := h.skip(b[:split]) + h.skip(b[split:])
		want := int64(0)
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			want = int64(len(b) - i - 4)
		}
		if got != want {
			t.Fatalf("headEnd: %d bytes after the head of %q (split %d), want %d", got, b, split, want)
		}
		br := bufio.NewReaderSize(bytes.NewReader(b), 16)
		br.Peek(1)
		switch r := meshErrorIn(br); r {
		case "", "other", ReasonNoInstance, ReasonTimeout, ReasonDeadlineExceeded, ReasonDenied,
			ReasonConnectFailed, ReasonUpstreamReset, ReasonBadRequest:
		default:
			t.Fatalf("meshErrorIn(%q) = %q, not a known reason", b, r)
		}
		s := string(b)
		n, err := strconv.Atoi(s)
		wantStatus := -1
		if err == nil && len(s) <= 3 && s[0] != '-' && s[0] != '+' {
			wantStatus = n
		}
		if got := parseGRPCStatus(s); got != wantStatus {
			t.Fatalf("parseGRPCStatus(%q) = %d, want %d", s, got, wantStatus)
		}
	})
}
