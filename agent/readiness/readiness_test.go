package readiness

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/internal/clock"
)

var t0 = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

func TestGossip(t *testing.T) {
	restored := CatalogState{RestoredAt: t0.Add(-4 * time.Second)}
	tests := []struct {
		name    string
		others  int
		alone   bool
		catalog CatalogState
		ok      bool
		reason  string
	}{
		{"alone client", 0, false, CatalogState{}, false, "not joined"},
		{"one other", 1, false, CatalogState{}, true, "1 other member alive"},
		{"several others", 4, false, CatalogState{}, true, "4 other members alive"},
		{"server that bootstraps alone", 0, true, CatalogState{}, true, "cluster of its own"},
		{"lone server with others", 2, true, CatalogState{}, true, "2 other members"},
		{"alone, serving a restored catalog", 0, false, restored, true, "not joined yet: serving the catalog restored from disk (4s old) until gossip syncs"},
		{"joined, restored catalog not yet dropped", 1, false, restored, true, "1 other member alive"},
		{"alone after a sync", 0, false, CatalogState{Synced: true}, false, "not joined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, reason := Gossip(func() int { return tt.others }, tt.alone, func() CatalogState { return tt.catalog }).Probe(t0)
			if ok != tt.ok || !strings.Contains(reason, tt.reason) {
				t.Errorf("got %v %q, want %v and a reason with %q", ok, reason, tt.ok, tt.reason)
			}
		})
	}
}

func TestCatalog(t *testing.T) {
	tests := []struct {
		name    string
		catalog CatalogState
		alone   bool
		ok      bool
		reason  string
	}{
		{"nothing yet", CatalogState{}, false, false, "empty: gossip not yet synced with any member, and no catalog restored from disk"},
		{"restored", CatalogState{RestoredAt: t0.Add(-4 * time.Second)}, false, true, "restored from disk, 4s old, gossip not yet synced"},
		{"restored, clock behind the file", CatalogState{RestoredAt: t0.Add(time.Second)}, false, true, "restored from disk, 0s old"},
		{"synced", CatalogState{Synced: true}, false, true, "synced with the cluster through gossip"},
		{"synced before the restore ends", CatalogState{Synced: true, RestoredAt: t0}, false, true, "synced"},
		{"server that bootstraps alone", CatalogState{}, true, true, "bootstraps alone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, reason := Catalog(func() CatalogState { return tt.catalog }, tt.alone).Probe(t0)
			if ok != tt.ok || !strings.Contains(reason, tt.reason) {
				t.Errorf("got %v %q, want %v and a reason with %q", ok, reason, tt.ok, tt.reason)
			}
		})
	}
}

// TestRestoredCatalogIsReady pins the decision of docs/design.md: an agent
// that serves from a restored catalog is ready (a load balancer keeps
// sending to it); once that catalog is dropped with gossip still not
// synced, it is not.
func TestRestoredCatalogIsReady(t *testing.T) {
	st := CatalogState{RestoredAt: t0.Add(-time.Minute)}
	state := func() CatalogState { return st }
	c := New(clock.NewManual(t0),
		Gossip(func() int { return 0 }, false, state),
		Catalog(state, false),
		Certificate(func() (time.Time, time.Time, error) { return t0.Add(-time.Minute), t0.Add(time.Hour), nil }),
		Policy(func() time.Time { return t0.Add(-time.Minute) }),
	)
	if r := c.Report(); !r.Ready {
		t.Fatalf("serving a restored catalog: %+v, want ready", r)
	}
	st = CatalogState{}
	r := c.Report()
	if r.Ready || r.Checks[0].OK || r.Checks[1].OK || !r.Checks[2].OK || !r.Checks[3].OK {
		t.Fatalf("restored catalog dropped before a sync: %+v, want not ready on gossip and catalog", r)
	}
}

func TestCertificate(t *testing.T) {
	nb, na := t0.Add(-time.Hour), t0.Add(23*time.Hour)
	tests := []struct {
		name   string
		now    time.Time
		err    error
		ok     bool
		reason string
	}{
		{"none yet", t0, errors.New("ca: leaf: no certificate yet"), false, "no certificate: ca: leaf: no certificate yet"},
		{"valid", t0, nil, true, "valid until 2026-12-08T09:00:00Z (23h0m0s left)"},
		{"at NotBefore", nb, nil, true, "valid until"},
		{"before NotBefore", nb.Add(-time.Second), nil, false, "not valid before 2026-12-07T09:00:00Z (1s from now"},
		{"at NotAfter", na, nil, false, "expired at 2026-12-08T09:00:00Z (0s ago"},
		{"after NotAfter", na.Add(time.Minute), nil, false, "expired at 2026-12-08T09:00:00Z (1m0s ago"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, reason := Certificate(func() (time.Time, time.Time, error) { return nb, na, tt.err }).Probe(tt.now)
			if ok != tt.ok || !strings.Contains(reason, tt.reason) {
				t.Errorf("got %v %q, want %v and a reason with %q", ok, reason, tt.ok, tt.reason)
			}
		})
	}
}

func TestPolicy(t *testing.T) {
	tests := []struct {
		name        string
		lastContact time.Time
		ok          bool
		reason      string
	}{
		{"never", time.Time{}, false, "no policy yet"},
		{"just now", t0, true, "0s ago"},
		{"from an earlier run", t0.Add(-90 * time.Minute), true, "1h30m0s ago"},
		{"clock behind the contact", t0.Add(time.Second), true, "0s ago"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, reason := Policy(func() time.Time { return tt.lastContact }).Probe(t0)
			if ok != tt.ok || !strings.Contains(reason, tt.reason) {
				t.Errorf("got %v %q, want %v and a reason with %q", ok, reason, tt.ok, tt.reason)
			}
		})
	}
}

// TestReportIsReadyOnlyWhenEveryCheckPasses runs the checks at the
// checker's clock: moving it past the certificate's NotAfter makes the
// agent not ready, and says which check failed.
func TestReportIsReadyOnlyWhenEveryCheckPasses(t *testing.T) {
	clk := clock.NewManual(t0)
	others := 0
	c := New(clk,
		Gossip(func() int { return others }, false, func() CatalogState { return CatalogState{} }),
		Certificate(func() (time.Time, time.Time, error) { return t0.Add(-time.Minute), t0.Add(time.Hour), nil }),
		Policy(func() time.Time { return t0 }),
	)
	reg := prometheus.NewRegistry()
	if err := c.Register(reg); err != nil {
		t.Fatal(err)
	}
	check := func(wantReady bool, wantOK ...bool) {
		t.Helper()
		r := c.Report()
		if r.Ready != wantReady || len(r.Checks) != 3 {
			t.Fatalf("report %+v, want ready %v with 3 checks", r, wantReady)
		}
		if got := gaugeOf(t, reg, MetricReady, ""); got != b2f(wantReady) {
			t.Errorf("%s = %v, want %v", MetricReady, got, b2f(wantReady))
		}
		for i, name := range []string{CheckGossip, CheckCertificate, CheckPolicy} {
			if r.Checks[i].Name != name || r.Checks[i].OK != wantOK[i] || r.Checks[i].Reason == "" {
				t.Errorf("check %d: %+v, want %s ok=%v with a reason", i, r.Checks[i], name, wantOK[i])
			}
			if got := gaugeOf(t, reg, MetricCheck, name); got != b2f(wantOK[i]) {
				t.Errorf("%s{check=%q} = %v, want %v", MetricCheck, name, got, b2f(wantOK[i]))
			}
		}
	}
	check(false, false, true, true)
	others = 2
	check(true, true, true, true)
	clk.Advance(time.Hour)
	check(false, true, false, true)
	if New(nil).Report().Ready != true {
		t.Error("a checker without checks is not ready")
	}
}

// gaugeOf returns the value of the gauge name, of one check unless check
// is "".
func gaugeOf(t *testing.T, reg *prometheus.Registry, name, check string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if check == "" || m.GetLabel()[0].GetValue() == check {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s{check=%q}", name, check)
	return 0
}
