package accesslog

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshwork/meshwork/internal/clock"
	"github.com/meshwork/meshwork/transport/observe"
)

// openLog starts a Log on cfg and closes it when the test ends.
func openLog(t *testing.T, cfg Config) *Log {
	t.Helper()
	l, err := New(cfg, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// readLines reads a log file back, one decoded object per line.
func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for line := range bytes.Lines(data) {
		if !json.Valid(line) {
			t.Fatalf("%s: not JSON: %q", path, line)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// count reads a counter.
func count(c prometheus.Counter) int {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return int(m.GetCounter().GetValue())
}

func hexID(s string) (id [16]byte) {
	copy(id[:], s)
	return id
}

var start = time.Date(2026, 12, 7, 9, 30, 1, 234567891, time.FixedZone("CET", 3600))

func TestLinesParseBack(t *testing.T) {
	// The shipped unit's umask: the file must still be created 0640.
	defer syscall.Umask(syscall.Umask(0o077))
	path := filepath.Join(t.TempDir(), "access.log")
	l := openLog(t, Config{Path: path, SampleRate: 1})
	calls := []observe.Call{
		{ // an HTTP request the outbound agent retried once
			Direction: observe.Outbound, Protocol: observe.HTTP,
			Start: start, Duration: 12345678 * time.Nanosecond,
			Source: "web", Destination: "api",
			SourceIdentity:      "spiffe://mesh.local/ns/default/svc/web",
			DestinationIdentity: "spiffe://mesh.local/ns/default/svc/api",
			Route:               "canary", Instance: "node-b/10.0.0.2:8080",
			Method: "GET", Authority: "api.service.mesh", Path: "/v1/users?id=7",
			UserAgent: "curl/8.5.0", RequestID: "r-1",
			Status: 200, GRPCStatus: -1, BytesIn: 0, BytesOut: 532, Attempts: 2,
			Trace: observe.TraceIDs{
				TraceID: [16]byte{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
				SpanID:  [8]byte{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
				Sampled: true,
			},
		},
		{ // a gRPC call the server failed with UNAVAILABLE, on the inbound side
			Direction: observe.Inbound, Protocol: observe.GRPC,
			Start: start, Duration: 250 * time.Microsecond,
			Source: "web", Destination: "billing",
			SourceIdentity: "spiffe://mesh.local/ns/default/svc/web",
			Instance:       "127.0.0.1:9090",
			Method:         "POST", Authority: "billing.service.mesh", Path: "/billing.v1.Billing/Charge",
			UserAgent: "grpc-go/1.70.0", Status: 200, GRPCStatus: 14,
			BytesIn: 48, BytesOut: 5,
		},
		{ // an L4 connection
			Direction: observe.Outbound, Protocol: observe.TCP,
			Start: start, Duration: 3 * time.Second,
			Source: "web", Destination: "db", Instance: "node-c/10.0.0.3:5432",
			GRPCStatus: -1, BytesIn: 4096, BytesOut: 1 << 20, Attempts: 1,
		},
		{ // the mesh answered itself: no instance was healthy
			Direction: observe.Outbound, Protocol: observe.HTTP,
			Start: start, Duration: time.Millisecond,
			Source: "web", Destination: "api", Method: "DELETE", Path: "/v1/users/7",
			Authority: "api.service.mesh", Status: 503, GRPCStatus: -1,
			MeshError: "no_healthy_instance", BytesOut: 19, Attempts: 3,
		},
	}
	for i := range calls {
		l.Begin(&calls[i])
		l.End(&calls[i])
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	const ts = "2026-12-07T08:30:01.234Z" // UTC, milliseconds
	want := []map[string]any{
		{
			"start_time": ts, "duration_ms": 12.345, "direction": "outbound", "protocol": "http",
			"source": "web", "destination": "api",
			"source_identity":      "spiffe://mesh.local/ns/default/svc/web",
			"destination_identity": "spiffe://mesh.local/ns/default/svc/api",
			"route":                "canary", "instance": "node-b/10.0.0.2:8080",
			"method": "GET", "authority": "api.service.mesh", "path": "/v1/users?id=7",
			"user_agent": "curl/8.5.0", "request_id": "r-1", "status": 200.0, "result": "success",
			"bytes_received": 0.0, "bytes_sent": 532.0, "attempts": 2.0,
			"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
		},
		{
			"start_time": ts, "duration_ms": 0.25, "direction": "inbound", "protocol": "grpc",
			"source": "web", "destination": "billing",
			"source_identity": "spiffe://mesh.local/ns/default/svc/web",
			"instance":        "127.0.0.1:9090", "method": "POST", "authority": "billing.service.mesh",
			"path": "/billing.v1.Billing/Charge", "user_agent": "grpc-go/1.70.0",
			"status": 200.0, "grpc_status": 14.0, "result": "failure",
			"bytes_received": 48.0, "bytes_sent": 5.0,
		},
		{
			"start_time": ts, "duration_ms": 3000.0, "direction": "outbound", "protocol": "tcp",
			"source": "web", "destination": "db", "instance": "node-c/10.0.0.3:5432",
			"result": "success", "bytes_received": 4096.0, "bytes_sent": 1048576.0, "attempts": 1.0,
		},
		{
			"start_time": ts, "duration_ms": 1.0, "direction": "outbound", "protocol": "http",
			"source": "web", "destination": "api", "method": "DELETE", "path": "/v1/users/7",
			"authority": "api.service.mesh", "status": 503.0, "result": "failure",
			"mesh_error": "no_healthy_instance", "bytes_received": 0.0, "bytes_sent": 19.0, "attempts": 3.0,
		},
	}
	got := readLines(t, path)
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("line %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
	if n := count(l.m.lines); n != len(want) {
		t.Errorf("%s = %d, want %d", MetricLines, n, len(want))
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != fileMode {
		t.Errorf("log file mode %v, want %v", perm, os.FileMode(fileMode))
	}
}

// traceIDs returns n trace IDs from a seeded source, random as the mesh's
// own are, so that sampling tests see the same IDs every run.
func traceIDs(n int) [][16]byte {
	r := rand.New(rand.NewPCG(28, 8000))
	ids := make([][16]byte, n)
	for i := range ids {
		binary.BigEndian.PutUint64(ids[i][:8], r.Uint64())
		binary.BigEndian.PutUint64(ids[i][8:], r.Uint64())
	}
	return ids
}

func TestSamplingFollowsTheTraceID(t *testing.T) {
	const n, rate = 8000, 0.25
	dir := t.TempDir()
	// Both agents of each call: they must log the same calls.
	out := openLog(t, Config{Path: filepath.Join(dir, "outbound.log"), SampleRate: rate, RateLimit: 1e6, QueueSize: n})
	in := openLog(t, Config{Path: filepath.Join(dir, "inbound.log"), SampleRate: rate, RateLimit: 1e6, QueueSize: n})
	for i, id := range traceIDs(n) {
		c := observe.Call{Protocol: observe.HTTP, GRPCStatus: -1, RequestID: fmt.Sprint(i), Trace: observe.TraceIDs{TraceID: id}}
		out.End(&c)
		c.Direction = observe.Inbound
		in.End(&c)
	}
	for _, l := range []*Log{out, in} {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	outLines := readLines(t, filepath.Join(dir, "outbound.log"))
	t.Logf("sample rate %v: %d of %d calls logged", rate, len(outLines), n)
	if got, lo, hi := len(outLines), (rate-0.02)*n, (rate+0.02)*n; float64(got) < lo || float64(got) > hi {
		t.Errorf("sample rate %v over %d calls: %d lines, want %.0f to %.0f", rate, n, got, lo, hi)
	}
	if got, want := count(out.m.sampledOut), n-len(outLines); got != want {
		t.Errorf("%s = %d, want %d", MetricSampledOut, got, want)
	}
	ids := func(lines []map[string]any) []any {
		var ids []any
		for _, m := range lines {
			ids = append(ids, m["request_id"])
		}
		return ids
	}
	if a, b := ids(outLines), ids(readLines(t, filepath.Join(dir, "inbound.log"))); !reflect.DeepEqual(a, b) {
		t.Errorf("the two sides logged different calls: %d outbound, %d inbound", len(a), len(b))
	}
}

func TestSamplingWithoutATraceID(t *testing.T) {
	// Calls with no trace ID are sampled by chance; at 0 and 1 exactly.
	for _, rate := range []float64{0, 1} {
		path := filepath.Join(t.TempDir(), "access.log")
		l := openLog(t, Config{Path: path, SampleRate: rate})
		for range 100 {
			l.End(&observe.Call{Protocol: observe.TCP, GRPCStatus: -1})
		}
		l.Close()
		if got, want := len(readLines(t, path)), int(rate*100); got != want {
			t.Errorf("rate %v: %d lines of 100, want %d", rate, got, want)
		}
	}
}

func TestRateLimitCapsLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	clk := clock.NewManual(start)
	l := openLog(t, Config{Path: path, SampleRate: 1, RateLimit: 100, QueueSize: 4000, Clock: clk})
	burst := func() {
		for range 1000 {
			l.End(&observe.Call{Protocol: observe.TCP, GRPCStatus: -1})
		}
	}
	burst() // a second's worth: 100
	clk.Advance(250 * time.Millisecond)
	burst() // a quarter second refilled: 25
	clk.Advance(10 * time.Second)
	burst() // the bucket holds one second at most: 100
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	const want = 225
	if got := len(readLines(t, path)); got != want {
		t.Errorf("%d lines written, want %d", got, want)
	}
	if got := count(l.m.rateLimited); got != 3000-want {
		t.Errorf("%s{reason=%q} = %d, want %d", MetricDropped, reasonRateLimit, got, 3000-want)
	}
	if got := count(l.m.lines); got != want {
		t.Errorf("%s = %d, want %d", MetricLines, got, want)
	}
}

func TestLimiterIntervals(t *testing.T) {
	// Rates that do not divide a second still allow exactly rate lines
	// in a burst.
	for _, rate := range []int{1, 3, 7, 1000, 99991} {
		lim := newLimiter(rate)
		n := 0
		for lim.allow(start) {
			n++
			if n > rate+1 {
				break
			}
		}
		if n != rate {
			t.Errorf("rate %d: a burst of %d, want %d", rate, n, rate)
		}
	}
}

// TestFullQueueDropsWithoutBlocking points the log at a named pipe that is
// never read, so the writer blocks once the pipe is full. End must go on
// returning, dropping and counting; Close must return within its bound,
// and every call must be either in the pipe or counted.
func TestFullQueueDropsWithoutBlocking(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pipe")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	reader, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	const n, queue = 5000, 8
	l := openLog(t, Config{Path: path, SampleRate: 1, RateLimit: 1e6, QueueSize: queue, CloseTimeout: 100 * time.Millisecond})
	c := observe.Call{Protocol: observe.HTTP, GRPCStatus: -1, Path: strings.Repeat("/x", 100)}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for range n {
			l.End(&c)
		}
	}()
	select {
	case <-ended:
	case <-time.After(time.Minute):
		t.Fatal("End blocked behind a writer stuck on a full pipe")
	}
	lineLen := len(appendLine(nil, &c))
	pipeSize, _, errno := syscall.Syscall(syscall.SYS_FCNTL, reader.Fd(), 1032 /* F_GETPIPE_SZ */, 0)
	if errno != 0 {
		t.Fatalf("F_GETPIPE_SZ: %v", errno)
	}
	if atMost := int(pipeSize)/lineLen + 2*maxBatch + queue; count(l.m.queueFull) < n-atMost {
		t.Errorf("%s{reason=%q} = %d: with a blocked writer, want at least %d", MetricDropped, reasonQueueFull, count(l.m.queueFull), n-atMost)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(reader)
	if err != nil && !errors.Is(err, syscall.EAGAIN) {
		t.Fatal(err)
	}
	whole := bytes.Count(data, []byte("\n"))
	if written := count(l.m.lines); written != whole {
		t.Errorf("%s = %d, but the pipe holds %d whole lines", MetricLines, written, whole)
	}
	t.Logf("%d calls: %d lines in the pipe, %d dropped on a full queue, %d cut off at Close", n, count(l.m.lines), count(l.m.queueFull), count(l.m.writeErrors))
	if sum := count(l.m.lines) + count(l.m.queueFull) + count(l.m.writeErrors); sum != n {
		t.Errorf("written %d + queue full %d + write errors %d = %d, want every one of %d calls",
			count(l.m.lines), count(l.m.queueFull), count(l.m.writeErrors), sum, n)
	}
}

func TestReopenAfterRename(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0o077))
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	rotated := path + ".1"
	l := openLog(t, Config{Path: path, SampleRate: 1})
	end := func(id string) { l.End(&observe.Call{Protocol: observe.HTTP, GRPCStatus: -1, RequestID: id}) }
	end("before-1")
	end("before-2")
	if err := os.Rename(path, rotated); err != nil { // as logrotate does
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	end("after-1")
	end("after-2")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ids := func(p string) []string {
		var ids []string
		for _, m := range readLines(t, p) {
			ids = append(ids, m["request_id"].(string))
		}
		return ids
	}
	newIDs, oldIDs := ids(path), ids(rotated)
	// Lines queued before Reopen may be written on either side of it;
	// lines ended after it must be in the new file.
	if len(newIDs) < 2 || newIDs[len(newIDs)-2] != "after-1" || newIDs[len(newIDs)-1] != "after-2" {
		t.Errorf("new file holds %v, want it to end with after-1, after-2", newIDs)
	}
	if st, err := os.Stat(path); err != nil {
		t.Error(err)
	} else if st.Mode().Perm() != fileMode {
		t.Errorf("the reopened file has mode %v, want %v", st.Mode().Perm(), os.FileMode(fileMode))
	}
	if all := append(oldIDs, newIDs...); !reflect.DeepEqual(all, []string{"before-1", "before-2", "after-1", "after-2"}) {
		t.Errorf("rotated file %v + new file %v: want all four lines, once each, in order", oldIDs, newIDs)
	}
}

func TestReopenFailureKeepsTheOldFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "log")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "access.log")
	l := openLog(t, Config{Path: path, SampleRate: 1})
	moved := dir + ".moved"
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	err := l.Reopen()
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Reopen with its directory gone: %v, want an error naming %s", err, path)
	}
	l.End(&observe.Call{Protocol: observe.TCP, GRPCStatus: -1, RequestID: "kept"})
	l.Close()
	if got := readLines(t, filepath.Join(moved, "access.log")); len(got) != 1 || got[0]["request_id"] != "kept" {
		t.Errorf("after a failed Reopen the old file holds %v, want the line", got)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no path", Config{SampleRate: 1}, "telemetry.access_log.path is empty"},
		{"relative path", Config{Path: "access.log", SampleRate: 1}, `telemetry.access_log.path "access.log" must be an absolute path`},
		{"rate above 1", Config{Path: filepath.Join(dir, "a"), SampleRate: 1.5}, "telemetry.access_log.sample_rate 1.5"},
		{"rate NaN", Config{Path: filepath.Join(dir, "a"), SampleRate: math.NaN()}, "telemetry.access_log.sample_rate NaN"},
		{"negative rate limit", Config{Path: filepath.Join(dir, "a"), SampleRate: 1, RateLimit: -3}, "telemetry.access_log.rate_limit -3"},
		{"negative queue", Config{Path: filepath.Join(dir, "a"), SampleRate: 1, QueueSize: -1}, "queue size -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, prometheus.NewRegistry(), nil)
			if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want ErrBadConfig naming %q", err, tc.want)
			}
		})
	}
	missing := filepath.Join(dir, "no-such-dir", "access.log")
	_, err := New(Config{Path: missing, SampleRate: 1}, prometheus.NewRegistry(), nil)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "telemetry.access_log.path") || !strings.Contains(err.Error(), missing) {
		t.Errorf("New in a missing directory: %v, want an error naming the setting and %s", err, missing)
	}
}

func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	path := filepath.Join(t.TempDir(), "access.log")
	l, err := New(Config{Path: path, SampleRate: 1}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.End(&observe.Call{GRPCStatus: -1})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		got = append(got, mf.GetName())
		if !strings.HasPrefix(mf.GetName(), "meshwork_accesslog_") || !strings.HasSuffix(mf.GetName(), "_total") {
			t.Errorf("%s: want meshwork_accesslog_<name>_total", mf.GetName())
		}
	}
	if want := slices.Sorted(slices.Values(MetricNames)); !slices.Equal(got, want) {
		t.Errorf("registered %v, want %v", got, want)
	}
	if _, err := New(Config{Path: path, SampleRate: 1}, reg, nil); err == nil {
		t.Error("a second Log on the same registry: no error for the duplicate metrics")
	}
}

func TestCloseIsFinal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l := openLog(t, Config{Path: path, SampleRate: 1})
	l.End(&observe.Call{GRPCStatus: -1})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	l.End(&observe.Call{GRPCStatus: -1}) // no panic, no line
	if err := l.Reopen(); !errors.Is(err, ErrClosed) {
		t.Errorf("Reopen after Close: %v, want ErrClosed", err)
	}
	if got := len(readLines(t, path)); got != 1 {
		t.Errorf("%d lines, want the 1 ended before Close", got)
	}
}

// TestConcurrentEndReopenClose runs End from several goroutines while the
// file is rotated and the log closed, for the race detector.
func TestConcurrentEndReopenClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l := openLog(t, Config{Path: path, SampleRate: 1, RateLimit: 1e6, QueueSize: 64})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			c := observe.Call{Protocol: observe.HTTP, GRPCStatus: -1, RequestID: fmt.Sprint(g)}
			for range 2000 {
				l.End(&c)
			}
		})
	}
	for i := range 5 {
		os.Rename(path, fmt.Sprintf("%s.%d", path, i))
		if err := l.Reopen(); err != nil {
			t.Error(err)
		}
	}
	l.Close()
	wg.Wait()
	// Every line that was written is whole.
	files, _ := filepath.Glob(path + "*")
	whole := 0
	for _, f := range files {
		whole += len(readLines(t, f))
	}
	if got := count(l.m.lines); got != whole {
		t.Errorf("%s = %d, files hold %d lines", MetricLines, got, whole)
	}
}

// discard is a destination that takes every line.
type discard struct{}

func (discard) write(lines [][]byte) (int, error) { return len(lines), nil }
func (discard) reopen() error                     { return nil }
func (discard) close() error                      { return nil }

func benchCall() observe.Call {
	return observe.Call{
		Direction: observe.Outbound, Protocol: observe.HTTP, Start: start, Duration: 1234 * time.Microsecond,
		Source: "web", Destination: "api",
		SourceIdentity: "spiffe://mesh.local/ns/default/svc/web", DestinationIdentity: "spiffe://mesh.local/ns/default/svc/api",
		Route: "canary", Instance: "node-b/10.0.0.2:8080",
		Method: "GET", Authority: "api.service.mesh", Path: "/v1/users?id=7", UserAgent: "Mozilla/5.0 (X11; Linux x86_64) curl/8.5.0",
		RequestID: "9f0c1e4a-5b7d-4c2e-8a1f-3d6e7b8c9a0b", Status: 200, GRPCStatus: -1, BytesOut: 532, Attempts: 1,
		Trace: observe.TraceIDs{TraceID: hexID("0123456789abcdef"), SpanID: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, Sampled: true},
	}
}

// BenchmarkEnd is the data path's cost of a logged call: sampling 1, the
// rate limit never reached, a writer that discards.
func BenchmarkEnd(b *testing.B) {
	l, err := newLog(Config{Path: "/bench", SampleRate: 1, RateLimit: 1e9, QueueSize: 1 << 16, CloseTimeout: time.Second, Clock: clock.Real}, discard{}, prometheus.NewRegistry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	c := benchCall()
	b.SetBytes(int64(len(appendLine(nil, &c))))
	b.ReportAllocs()
	for b.Loop() {
		l.End(&c)
	}
	b.StopTimer()
	if q := count(l.m.queueFull); q > 0 {
		b.Logf("%d of %d lines dropped on a full queue", q, b.N)
	}
}

// BenchmarkEndParallel is BenchmarkEnd from every core at once.
func BenchmarkEndParallel(b *testing.B) {
	l, err := newLog(Config{Path: "/bench", SampleRate: 1, RateLimit: 1e9, QueueSize: 1 << 16, CloseTimeout: time.Second, Clock: clock.Real}, discard{}, prometheus.NewRegistry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c := benchCall()
		for pb.Next() {
			l.End(&c)
		}
	})
}

// BenchmarkAppendLine is the formatting alone.
func BenchmarkAppendLine(b *testing.B) {
	c := benchCall()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendLine(buf[:0], &c)
	}
}

// BenchmarkFile is End and the writer together, to a file on disk: the
// whole cost of a logged call, End's share and the writer's, as ns/op of
// wall time (Close waits for the last line).
func BenchmarkFile(b *testing.B) {
	path := filepath.Join(b.TempDir(), "access.log")
	l, err := New(Config{Path: path, SampleRate: 1, RateLimit: 1e9, QueueSize: 1 << 16}, prometheus.NewRegistry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	c := benchCall()
	b.ReportAllocs()
	for b.Loop() {
		l.End(&c)
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if q := count(l.m.queueFull); q > 0 {
		b.Logf("%d of %d lines dropped on a full queue", q, b.N)
	}
}
