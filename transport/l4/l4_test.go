package l4

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/transport/transporttest"
	"github.com/meshwork/meshwork/transport/wire"
)

// TestMetricNames checks that MetricNames is what a Proxy registers.
func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.inbound.Inc()
	m.faults.WithLabelValues(faultAbort, "db").Inc()
	transporttest.CheckMetricNames(t, reg, MetricNames)
	if _, err := New(Config{IdleTimeout: time.Hour, LocalDialTimeout: time.Second, CopyBuffer: 4096}, Deps{Registerer: reg}); err == nil {
		t.Error("duplicate registration accepted")
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{IdleTimeout: time.Hour, LocalDialTimeout: time.Second},
		{IdleTimeout: time.Hour, CopyBuffer: 4096},
		{LocalDialTimeout: time.Second, CopyBuffer: 4096},
	} {
		if _, err := New(cfg, Deps{}); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

// TestDialRefusal answers a failed local dial from a real refused dial on
// loopback: dial_failed, or deadline_exceeded once the caller's budget is
// spent, with the address and the cause but not net's prefix.
func TestDialRefusal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close() // nothing listens there now: the dial is refused
	_, dialErr := (&net.Dialer{}).DialContext(context.Background(), "tcp", addr.String())
	if dialErr == nil {
		t.Skip("a dial to a closed loopback port succeeded")
	}
	for _, tc := range []struct {
		name            string
		budget, elapsed time.Duration
		code            wire.Code
	}{
		{"no budget", 0, time.Second, wire.CodeDialFailed},
		{"within the budget", time.Second, time.Millisecond, wire.CodeDialFailed},
		{"budget spent", time.Second, time.Second, wire.CodeDeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRefusal(addr, dialErr, tc.budget, tc.elapsed)
			if r.Code != tc.code {
				t.Errorf("code %s, want %s", r.Code, tc.code)
			}
			if !strings.HasPrefix(r.Reason, "dial "+addr.String()+": ") || strings.Contains(r.Reason, "dial tcp") {
				t.Errorf("reason %q", r.Reason)
			}
		})
	}
}
