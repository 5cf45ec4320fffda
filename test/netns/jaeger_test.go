//go:build e2e

package netns

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/meshwork/meshwork/internal/l7clients"
)

// ToolJaeger is the Jaeger all-in-one binary, as scripts/deps.sh e2e
// installs it (github.com/jaegertracing/jaeger/cmd/jaeger, v2: an
// OpenTelemetry Collector with Jaeger's storage and query).
const ToolJaeger = "jaeger"

// Jaeger is a Jaeger all-in-one on the test machine's loopback with
// in-memory storage: an OTLP/HTTP receiver and the query API.
type Jaeger struct {
	// OTLP is the receiver's URL without a path, as
	// telemetry.tracing.otlp_endpoint is written.
	OTLP string
	// Query is the base URL of the query service (its /api/traces).
	Query string
	Proc  *Proc
	// dial reaches Jaeger: from this machine, or from inside its host.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// client is an HTTP client that reaches Jaeger.
func (j *Jaeger) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: j.dial, DisableKeepAlives: true}}
}

// jaegerConfig keeps only what the tests use: the OTLP/HTTP receiver, the
// memory store, and the query service, each on a port the test chose. Its
// own metrics and traces are off, so that it listens on nothing else.
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memstore
    enable_tracing: false
    max_clock_skew_adjust: 0s
    http:
      endpoint: %s
    grpc:
      endpoint: %s
receivers:
  otlp:
    protocols:
      http:
        endpoint: %s
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// StartJaeger starts Jaeger on free loopback ports and waits until both
// its receiver and its query API answer. It fails the test, naming the
// deps.sh group to run, when the binary is not installed. Jaeger is
// killed, by its PID, when the test ends.
func StartJaeger(t *testing.T) *Jaeger {
	t.Helper()
	bin, err := l7clients.LookTool(ToolJaeger)
	if err != nil {
		t.Fatalf("%v: run scripts/deps.sh e2e", err)
	}
	// A port picked free may be taken before Jaeger binds it: then Jaeger
	// exits, and another set of ports is tried.
	for try := 1; ; try++ {
		ports := freeLoopbackPorts(t, 3)
		dir := t.TempDir()
		cfg := filepath.Join(dir, "jaeger.yaml")
		at := func(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
		if err := os.WriteFile(cfg, fmt.Appendf(nil, jaegerConfig, at(ports[0]), at(ports[1]), at(ports[2])), 0o644); err != nil {
			t.Fatal(err)
		}
		var d net.Dialer
		j := &Jaeger{
			OTLP:  "http://" + at(ports[2]),
			Query: "http://" + at(ports[0]),
			Proc:  startLocal(t, bin, "--config", cfg),
			dial:  d.DialContext,
		}
		err := j.waitReady(30 * time.Second)
		if err == nil {
			return j
		}
		exited := false
		select {
		case <-j.Proc.Done():
			exited = true
		default:
		}
		if !exited || try == 3 {
			t.Fatalf("jaeger not ready: %v", err)
		}
		t.Logf("jaeger exited before it was ready (try %d, %v); trying other ports", try, err)
	}
}

// StartJaegerIn starts Jaeger inside h, on h's address, so that the
// agents of other hosts export to it, and waits until it is ready. It is
// stopped by its PID when the test ends.
func StartJaegerIn(t *testing.T, h *Host) *Jaeger {
	t.Helper()
	bin, err := l7clients.LookTool(ToolJaeger)
	if err != nil {
		t.Fatalf("%v: run scripts/deps.sh e2e", err)
	}
	// The host's namespace is the test's own: these ports are free.
	at := func(port int) string { return net.JoinHostPort(h.Addr, strconv.Itoa(port)) }
	cfg := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, jaegerConfig, at(16686), at(16685), at(4318)), 0o644); err != nil {
		t.Fatal(err)
	}
	j := &Jaeger{OTLP: "http://" + at(4318), Query: "http://" + at(16686), Proc: h.Start(bin, "--config", cfg), dial: h.DialContext}
	t.Cleanup(func() {
		j.Proc.Signal(syscall.SIGTERM)
		if _, exited := j.Proc.Wait(10 * time.Second); !exited {
			j.Proc.Signal(syscall.SIGKILL)
		}
	})
	if err := j.waitReady(30 * time.Second); err != nil {
		t.Fatalf("jaeger in %s not ready: %v", h.Name, err)
	}
	return j
}

// waitReady waits until the query API answers and the receiver accepts
// connections, or Jaeger exits, or timeout passes.
func (j *Jaeger) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	otlpAddr := j.OTLP[len("http://"):]
	client := j.client()
	for {
		err := func() error {
			resp, err := client.Get(j.Query + "/api/services")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("query API: %s", resp.Status)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			c, err := j.dial(ctx, "tcp", otlpAddr)
			if err != nil {
				return err
			}
			return c.Close()
		}()
		if err == nil {
			return nil
		}
		select {
		case <-j.Proc.Done():
			return fmt.Errorf("jaeger exited (%v); last try: %w", j.Proc.err, err)
		case <-time.After(100 * time.Millisecond): // polling interval, not synchronisation
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", timeout, err)
		}
	}
}

// JaegerTrace is a trace as Jaeger's query API (/api/traces/<id>) gives it.
type JaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []JaegerSpan             `json:"spans"`
	Processes map[string]JaegerProcess `json:"processes"`
}

// JaegerSpan is one span of a JaegerTrace. Times are in microseconds.
type JaegerSpan struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []JaegerRef `json:"references"`
	StartTime     int64       `json:"startTime"`
	Duration      int64       `json:"duration"`
	Tags          []JaegerTag `json:"tags"`
	ProcessID     string      `json:"processID"`
}

// JaegerRef is a span's reference to another, CHILD_OF its parent.
type JaegerRef struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// JaegerTag is a span's attribute, or a process's (resource's).
type JaegerTag struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// JaegerProcess is the resource of spans: serviceName is service.name.
type JaegerProcess struct {
	ServiceName string      `json:"serviceName"`
	Tags        []JaegerTag `json:"tags"`
}

// errNoTrace is Trace's error while Jaeger does not hold the trace.
var errNoTrace = errors.New("jaeger holds no such trace")

// Trace asks Jaeger for the trace of id.
func (j *Jaeger) Trace(ctx context.Context, id [16]byte) (*JaegerTrace, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.Query+"/api/traces/"+hex.EncodeToString(id[:]), nil)
	if err != nil {
		return nil, err
	}
	resp, err := j.client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, errNoTrace
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jaeger: GET /api/traces: %s", resp.Status)
	}
	var body struct {
		Data   []JaegerTrace `json:"data"`
		Errors []struct {
			Code int    `json:"code"`
			Msg  string `json:"msg"`
		} `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("jaeger: GET /api/traces: %w", err)
	}
	if len(body.Errors) > 0 {
		return nil, fmt.Errorf("jaeger: GET /api/traces: %d %s", body.Errors[0].Code, body.Errors[0].Msg)
	}
	if len(body.Data) != 1 {
		return nil, fmt.Errorf("jaeger: GET /api/traces: %d traces, want 1", len(body.Data))
	}
	return &body.Data[0], nil
}

// Tag returns the value of a tag as text ("true", "200"), and whether
// there is one.
func Tag(tags []JaegerTag, key string) (string, bool) {
	for _, tg := range tags {
		if tg.Key == key {
			switch v := tg.Value.(type) {
			case string:
				return v, true
			case float64:
				return strconv.FormatFloat(v, 'f', -1, 64), true
			default:
				return fmt.Sprint(v), true
			}
		}
	}
	return "", false
}

// freeLoopbackPorts picks n distinct TCP ports free on 127.0.0.1 now.
func freeLoopbackPorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// startLocal starts a long-running command on the test machine itself,
// as Host.Start does in a host: output to a log printed when the test
// fails, killed with the test process (Pdeathsig), and stopped by its PID
// when the test ends: SIGTERM, then SIGKILL after 10 s.
func startLocal(t *testing.T, name string, args ...string) *Proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(name)+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Signal(syscall.SIGTERM)
		if _, exited := p.Wait(10 * time.Second); !exited {
			p.Signal(syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("--- %s log (last 4 KiB):\n%s", filepath.Base(name), tail(out, 4096))
		}
	})
	return p
}
