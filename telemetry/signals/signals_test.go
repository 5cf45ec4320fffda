package signals

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshwork/meshwork/transport/observe"
)

func newObserver(t *testing.T) (*Observer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	return o, reg
}

// call is a finished call of web to api.
func call(dir observe.Direction, proto observe.Protocol, status, grpcStatus int, reason string) *observe.Call {
	return &observe.Call{
		Direction: dir, Protocol: proto, Start: time.Now(), Duration: 3 * time.Millisecond,
		Source: "web", Destination: "api", Route: "canary",
		Status: status, GRPCStatus: grpcStatus, MeshError: reason,
		BytesIn: 100, BytesOut: 1000, Attempts: 1,
	}
}

func TestMetricNames(t *testing.T) {
	// Vectors show up once they have a child: give each one.
	reg2 := prometheus.NewRegistry()
	o2, err := New(reg2)
	if err != nil {
		t.Fatal(err)
	}
	c := call(observe.Inbound, observe.HTTP, 200, -1, "")
	o2.Begin(c)
	o2.End(c)
	mfs, err := reg2.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		got = append(got, mf.GetName())
		if !strings.HasPrefix(mf.GetName(), "meshwork_service_") {
			t.Errorf("metric %s is not named meshwork_service_*", mf.GetName())
		}
	}
	want := slices.Clone(MetricNames)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("registered %v, want %v", got, want)
	}
	if problems, err := promlint.NewWithMetricFamilies(mfs).Lint(); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestRegisterTwiceFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(reg); err == nil {
		t.Fatal("a second Observer on the same registry registered its metrics")
	}
}

func TestCountsByLabels(t *testing.T) {
	o, reg := newObserver(t)
	calls := []*observe.Call{
		call(observe.Inbound, observe.HTTP, 200, -1, ""),
		call(observe.Inbound, observe.HTTP, 200, -1, ""),
		call(observe.Inbound, observe.HTTP, 500, -1, ""),
		call(observe.Outbound, observe.HTTP, 403, -1, "denied"),
		call(observe.Outbound, observe.GRPC, 200, 0, ""),
		call(observe.Outbound, observe.GRPC, 200, 14, "no_healthy_instance"),
		call(observe.Inbound, observe.GRPC, 200, 5, ""),
		call(observe.Outbound, observe.TCP, 0, -1, ""),
		call(observe.Outbound, observe.TCP, 0, -1, "connect_failed"),
	}
	for _, c := range calls {
		o.Begin(c)
	}
	if got := value(t, reg, MetricActive, "direction", "inbound", "protocol", "http"); got != 3 {
		t.Errorf("active inbound http = %v while 3 are in progress", got)
	}
	for _, c := range calls {
		o.End(c)
	}
	want := []string{
		`code="",destination="api",direction="outbound",protocol="tcp",reason="",result="success",route="canary",source="web" 1`,
		`code="",destination="api",direction="outbound",protocol="tcp",reason="connect_failed",result="failure",route="canary",source="web" 1`,
		`code="0",destination="api",direction="outbound",protocol="grpc",reason="",result="success",route="canary",source="web" 1`,
		`code="14",destination="api",direction="outbound",protocol="grpc",reason="no_healthy_instance",result="failure",route="canary",source="web" 1`,
		`code="200",destination="api",direction="inbound",protocol="http",reason="",result="success",route="canary",source="web" 2`,
		`code="403",destination="api",direction="outbound",protocol="http",reason="denied",result="failure",route="canary",source="web" 1`,
		`code="5",destination="api",direction="inbound",protocol="grpc",reason="",result="success",route="canary",source="web" 1`,
		`code="500",destination="api",direction="inbound",protocol="http",reason="",result="failure",route="canary",source="web" 1`,
	}
	if got := series(t, reg, MetricRequests); !slices.Equal(got, want) {
		t.Errorf("%s:\n%s\nwant\n%s", MetricRequests, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, tc := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"direction", "inbound", "protocol", "http", "flow", "request"}, 300},
		{[]string{"direction", "inbound", "protocol", "http", "flow", "response"}, 3000},
		{[]string{"direction", "outbound", "protocol", "tcp", "flow", "request"}, 200},
		{[]string{"direction", "outbound", "protocol", "grpc", "flow", "response"}, 2000},
	} {
		if got := value(t, reg, MetricBytes, tc.labels...); got != tc.want {
			t.Errorf("bytes %v = %v, want %v", tc.labels, got, tc.want)
		}
	}
	if got := value(t, reg, MetricActive, "direction", "inbound", "protocol", "http"); got != 0 {
		t.Errorf("active inbound http = %v after every call ended", got)
	}
	h := histogram(t, reg, map[string]string{"direction": "inbound", "protocol": "http", "result": "success"})
	if h.GetSampleCount() != 2 || h.GetSampleSum() < 0.005 || h.GetSampleSum() > 0.007 {
		t.Errorf("duration of inbound successes: count %d sum %v, want 2 and 0.006", h.GetSampleCount(), h.GetSampleSum())
	}
}

// gather returns the metrics of family name.
func gather(t *testing.T, reg *prometheus.Registry, name string) []*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

// value sums the counters or gauges of family name whose labels include
// the pairs kv.
func value(t *testing.T, reg *prometheus.Registry, name string, kv ...string) float64 {
	t.Helper()
	var sum float64
metrics:
	for _, m := range gather(t, reg, name) {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if have[kv[i]] != kv[i+1] {
				continue metrics
			}
		}
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum
}

// series lists family name's counters as "labels value", sorted.
func series(t *testing.T, reg *prometheus.Registry, name string) []string {
	t.Helper()
	var out []string
	for _, m := range gather(t, reg, name) {
		var ls []string
		for _, lp := range m.GetLabel() {
			ls = append(ls, lp.GetName()+"="+strconv.Quote(lp.GetValue()))
		}
		out = append(out, strings.Join(ls, ",")+" "+strconv.FormatFloat(m.GetCounter().GetValue(), 'g', -1, 64))
	}
	slices.Sort(out)
	return out
}

// histogram gathers the duration histogram whose labels include want.
func histogram(t *testing.T, reg *prometheus.Registry, want map[string]string) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != MetricDuration {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue metrics
				}
			}
			if _, ok := have["code"]; ok {
				t.Errorf("duration has a code label: %v", have)
			}
			return m.GetHistogram()
		}
	}
	t.Fatalf("no %s with labels %v", MetricDuration, want)
	return nil
}

func TestDurationIsNativeAndClassic(t *testing.T) {
	o, reg := newObserver(t)
	for _, d := range []time.Duration{300 * time.Microsecond, 2 * time.Millisecond, 40 * time.Millisecond, 3 * time.Second} {
		c := call(observe.Outbound, observe.HTTP, 200, -1, "")
		c.Duration = d
		o.Begin(c)
		o.End(c)
	}
	h := histogram(t, reg, map[string]string{"direction": "outbound"})
	if len(h.GetBucket()) != len(DurationBuckets) {
		t.Errorf("%d classic buckets, want %d", len(h.GetBucket()), len(DurationBuckets))
	}
	for i, b := range h.GetBucket() {
		if b.GetUpperBound() != DurationBuckets[i] {
			t.Errorf("classic bucket %d: bound %v, want %v", i, b.GetUpperBound(), DurationBuckets[i])
		}
	}
	// Factor 1.1 is schema 3 (2^(2^-3) = 1.09).
	if h.GetSchema() != 3 {
		t.Errorf("native schema %d, want 3 (bucket factor 1.1)", h.GetSchema())
	}
	var n uint64
	for _, s := range h.GetPositiveSpan() {
		n += uint64(s.GetLength())
	}
	if n != 4 || h.GetSampleCount() != 4 {
		t.Errorf("native histogram: %d buckets for %d samples, want 4 for 4", n, h.GetSampleCount())
	}
}

func TestCodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    observe.Call
		want string
	}{
		{"http", observe.Call{Protocol: observe.HTTP, Status: 503, GRPCStatus: -1}, "503"},
		{"grpc ok", observe.Call{Protocol: observe.GRPC, Status: 200, GRPCStatus: 0}, "0"},
		{"grpc status unknown", observe.Call{Protocol: observe.GRPC, Status: 502, GRPCStatus: -1}, "502"},
		{"no status sent", observe.Call{Protocol: observe.HTTP, GRPCStatus: -1}, ""},
		{"tcp", observe.Call{Protocol: observe.TCP, GRPCStatus: -1}, ""},
		{"odd status", observe.Call{Protocol: observe.HTTP, Status: 799, GRPCStatus: -1}, "799"},
	} {
		got := ""
		if n := codeOf(&tc.c); n >= 0 {
			got = strconv.Itoa(n)
		}
		if got != tc.want {
			t.Errorf("%s: code %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestEndAllocatesNothing pins the cost of a call on a known label set.
func TestEndAllocatesNothing(t *testing.T) {
	o, _ := newObserver(t)
	c := call(observe.Inbound, observe.GRPC, 200, 0, "")
	o.Begin(c)
	o.End(c)
	if n := testing.AllocsPerRun(1000, func() { o.Begin(c); o.End(c) }); n != 0 {
		t.Errorf("Begin and End allocate %v times per call", n)
	}
}

func BenchmarkEnd(b *testing.B) {
	o, err := New(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	c := call(observe.Inbound, observe.HTTP, 200, -1, "")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			o.Begin(c)
			o.End(c)
		}
	})
}

func BenchmarkEndSerial(b *testing.B) {
	o, err := New(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	c := call(observe.Inbound, observe.HTTP, 200, -1, "")
	b.ReportAllocs()
	for b.Loop() {
		o.Begin(c)
		o.End(c)
	}
}
