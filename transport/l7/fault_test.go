package l7

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/observe"
)

// countingDraw returns a draw that always gives v, and the number of
// times it was called.
func countingDraw(v float64) (func() float64, *int) {
	n := 0
	return func() float64 { n++; return v }, &n
}

func headers(kv ...string) func(string) (string, bool) {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return headerOf(h)
}

func TestPlanFault(t *testing.T) {
	abort := func(pct float64) *policy.FaultAbort {
		return &policy.FaultAbort{Percent: pct, HTTPStatus: 429}
	}
	delay := func(pct float64) *policy.FaultDelay {
		return &policy.FaultDelay{Percent: pct, Fixed: policy.Duration(200 * time.Millisecond)}
	}
	chaos := &policy.FaultMatch{Headers: []policy.HeaderMatch{{Name: "x-chaos", Exact: "on"}}}
	tests := []struct {
		name      string
		f         *policy.Fault
		header    func(string) (string, bool)
		draw      float64 // what every draw gives
		wantAbort bool
		wantDelay time.Duration
		wantDraws int
	}{
		{"no fault", nil, headers(), 0, false, 0, 0},
		{"abort 100", &policy.Fault{Abort: abort(100)}, headers(), 0.999, true, 0, 0},
		{"abort 0", &policy.Fault{Abort: abort(0)}, headers(), 0, false, 0, 0},
		{"abort 10, drawn in", &policy.Fault{Abort: abort(10)}, headers(), 0.0999, true, 0, 1},
		{"abort 10, drawn out", &policy.Fault{Abort: abort(10)}, headers(), 0.1, false, 0, 1},
		{"abort 0.1, drawn in", &policy.Fault{Abort: abort(0.1)}, headers(), 0.0009, true, 0, 1},
		{"delay 100", &policy.Fault{Delay: delay(100)}, headers(), 0.5, false, 200 * time.Millisecond, 0},
		{"delay 50, drawn out", &policy.Fault{Delay: delay(50)}, headers(), 0.5, false, 0, 1},
		{"both, both drawn", &policy.Fault{Abort: abort(50), Delay: delay(50)}, headers(), 0.2, true, 200 * time.Millisecond, 2},
		{"both, neither drawn", &policy.Fault{Abort: abort(50), Delay: delay(50)}, headers(), 0.7, false, 0, 2},
		{"header matches", &policy.Fault{Abort: abort(100), Match: chaos}, headers("X-Chaos", "on"), 0, true, 0, 0},
		{"header absent", &policy.Fault{Abort: abort(100), Match: chaos}, headers("X-Other", "on"), 0, false, 0, 0},
		{"header differs", &policy.Fault{Abort: abort(100), Match: chaos}, headers("X-Chaos", "off"), 0, false, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			draw, n := countingDraw(tt.draw)
			fp := planFault(tt.f, tt.header, draw)
			if fp.abort != tt.wantAbort || fp.delay != tt.wantDelay {
				t.Fatalf("plan = %+v; want abort %v, delay %v", fp, tt.wantAbort, tt.wantDelay)
			}
			if *n != tt.wantDraws {
				t.Errorf("%d draws, want %d", *n, tt.wantDraws)
			}
			if fp.abort && (fp.httpStatus != 429 || fp.grpcStatus != policy.DefaultFaultGRPCStatus) {
				t.Errorf("abort statuses %d, %d; want 429 and the default grpc-status", fp.httpStatus, fp.grpcStatus)
			}
		})
	}
}

// TestPlanFaultShare draws with a seeded source: the share aborted is the
// percent asked for. At p = 0.1 and n = 100,000 the standard deviation of
// the share is 0.095 %, so ±0.5 % is over 5 sigma (and the seed makes the
// run repeatable).
func TestPlanFaultShare(t *testing.T) {
	r := rand.New(rand.NewPCG(26, 10))
	f := &policy.Fault{Abort: &policy.FaultAbort{Percent: 10, HTTPStatus: 503}}
	const n = 100_000
	aborted := 0
	for range n {
		if planFault(f, nil, r.Float64).abort {
			aborted++
		}
	}
	if share := float64(aborted) / n; share < 0.095 || share > 0.105 {
		t.Fatalf("aborted %d of %d (%.2f %%), want 10 %% ± 0.5 %%", aborted, n, share*100)
	}
}

func TestFaultAbortAnswers(t *testing.T) {
	fp := faultPlan{abort: true, httpStatus: 429, grpcStatus: 8, delay: time.Millisecond}
	req, _ := http.NewRequest("GET", "http://api/x", nil)

	resp := fp.abortResponse(req, false)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 429 || resp.Header.Get(ErrorHeader) != ReasonFaultInjected ||
		strings.Join(resp.Header.Values(FaultHeader), ",") != "delay,abort" || !strings.Contains(string(body), ReasonFaultInjected) {
		t.Errorf("HTTP abort: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	var o observe.Call
	fp.recordAbort(&o, false)
	if o.Status != 429 || o.MeshError != ReasonFaultInjected || o.Result() != observe.Failure {
		t.Errorf("HTTP abort recorded as %+v", o)
	}

	resp = fp.abortResponse(req, true)
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "8" || resp.Header.Get(ErrorHeader) != ReasonFaultInjected ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc") || resp.Body != http.NoBody ||
		resp.Header.Get(FaultHeader) == "" {
		t.Errorf("gRPC abort: %d %v", resp.StatusCode, resp.Header)
	}
	o = observe.Call{Protocol: observe.GRPC}
	fp.recordAbort(&o, true)
	if o.Status != 200 || o.GRPCStatus != 8 || o.MeshError != ReasonFaultInjected {
		t.Errorf("gRPC abort recorded as %+v", o)
	}
	// The caller's agent reads the reason back from the answer.
	if knownReason([]byte(ReasonFaultInjected)) != ReasonFaultInjected {
		t.Error("fault_injected is not a known reason")
	}
}

func TestFaultWait(t *testing.T) {
	t.Run("no delay", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if me := (faultPlan{}).wait(ctx); me != nil {
			t.Fatalf("a plan without delay answered %v", me)
		}
	})
	t.Run("delay served", func(t *testing.T) {
		const d = 5 * time.Millisecond
		t0 := time.Now()
		if me := (faultPlan{delay: d}).wait(context.Background()); me != nil {
			t.Fatalf("wait = %v", me)
		}
		if el := time.Since(t0); el < d {
			t.Fatalf("held %v, less than the delay %v", el, d)
		}
	})
	t.Run("deadline shorter than delay", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		me := (faultPlan{delay: time.Hour}).wait(ctx)
		if me == nil || me.status != http.StatusGatewayTimeout || me.reason != ReasonDeadlineExceeded {
			t.Fatalf("wait = %v; want 504 %s", me, ReasonDeadlineExceeded)
		}
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("returned before the deadline: %v", ctx.Err())
		}
	})
	t.Run("caller gone", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		me := (faultPlan{delay: time.Hour}).wait(ctx)
		if me == nil || me.reason != ReasonUpstreamReset {
			t.Fatalf("wait = %v; want %s", me, ReasonUpstreamReset)
		}
	})
}

// TestFaultMetric: the counter is registered under its documented name
// and counts by kind and service.
func TestFaultMetric(t *testing.T) {
	p, err := New(Config{}, Deps{
		Fault: func(svc string) *policy.Fault {
			if svc != "api" {
				return nil
			}
			return &policy.Fault{Abort: &policy.FaultAbort{Percent: 100, HTTPStatus: 503},
				Delay: &policy.FaultDelay{Percent: 100, Fixed: policy.Duration(time.Second)}}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	req, _ := http.NewRequest("GET", "http://api/", nil)
	if fp := p.planFor("web", req); fp.abort || fp.delay != 0 {
		t.Fatalf("a service without a Fault got %+v", fp)
	}
	p.planFor("api", req)
	p.planFor("api", req)
	for _, kind := range []string{faultAbort, faultDelay} {
		if got := counterValue(t, p.m.faults.WithLabelValues(kind, "api")); got != 2 {
			t.Errorf("%s{kind=%s,service=api} = %v, want 2", MetricFaults, kind, got)
		}
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestFaultMetricDocumented: docs/tunnels.md lists the counter with the
// other per-request metrics.
func TestFaultMetricDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/tunnels.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "| `"+MetricFaults+"` |") {
		t.Errorf("docs/tunnels.md does not list %s", MetricFaults)
	}
}
