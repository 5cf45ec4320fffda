package catalogstate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/clock"
	"github.com/meshwork/meshwork/internal/testnet"
)

const wait = 20 * time.Second

type writerHarness struct {
	w     *Writer
	cfg   Config
	store *catalog.Store
	clk   *clock.Manual
	reg   *prometheus.Registry
}

func newWriterHarness(t *testing.T) *writerHarness {
	t.Helper()
	h := &writerHarness{cfg: testConfig(t), store: catalog.NewStore(), clk: clock.NewManual(t0), reg: prometheus.NewRegistry()}
	h.cfg.Interval = 5 * time.Second
	w, err := NewWriter(h.cfg, Deps{Store: h.store, Clock: h.clk, Registerer: h.reg})
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return h
}

// armed waits until the writer waits out its interval after a change.
func (h *writerHarness) armed(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := h.clk.WaitPending(ctx, 1); err != nil {
		t.Fatalf("the writer did not wait for its interval: %v", err)
	}
}

func (h *writerHarness) writes(t *testing.T) float64 {
	t.Helper()
	return metric(t, h.reg, MetricWrites)
}

// wrote waits until the writer has counted n writes: it counts each just
// after the file is in place.
func (h *writerHarness) wrote(t *testing.T, n float64) {
	t.Helper()
	testnet.Eventually(t, wait, "the write is counted", func() error {
		if got := h.writes(t); got != n {
			return fmt.Errorf("%v writes counted, want %v", got, n)
		}
		return nil
	})
}

// saved waits until the file holds n members, and returns it.
func (h *writerHarness) saved(t *testing.T, n int) State {
	t.Helper()
	var s State
	testnet.Eventually(t, wait, "the file holds the catalog", func() error {
		var err error
		s, err = Read(h.cfg, h.clk.Now())
		if err == nil && len(s.Members) != n {
			err = errors.New("wrong member count")
		}
		return err
	})
	return s
}

// TestWriterDebounces: a burst of changes is one write, made an interval
// after the first change, of the catalog as it is then.
func TestWriterDebounces(t *testing.T) {
	h := newWriterHarness(t)
	for i := range 3 {
		h.store.Publish(sampleMembers()[:i+1])
	}
	h.armed(t)
	if _, err := os.Stat(h.cfg.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("written before the interval: %v", err)
	}
	h.clk.Advance(h.cfg.Interval)
	s := h.saved(t, 3)
	if !s.SavedAt.Equal(t0.Add(h.cfg.Interval)) {
		t.Fatalf("saved at %v, want %v", s.SavedAt, t0.Add(h.cfg.Interval))
	}
	h.wrote(t, 1) // one for the burst
	if got := metric(t, h.reg, MetricSize); got <= 0 {
		t.Fatalf("%s = %v", MetricSize, got)
	}

	// The next change is written one interval later.
	h.store.Publish(sampleMembers()[:1])
	h.armed(t)
	h.clk.Advance(h.cfg.Interval)
	h.saved(t, 1)
	h.wrote(t, 2)
}

// TestWriterSkipsRestoredCatalog: a catalog that includes the restored one
// is never saved (it would look younger than it is); once the restore
// ends, the publisher's own view is.
func TestWriterSkipsRestoredCatalog(t *testing.T) {
	h := newWriterHarness(t)
	h.store.Restore(sampleMembers(), t0.Add(-time.Minute))
	if got := metric(t, h.reg, MetricRestored); got != 1 {
		t.Fatalf("%s = %v during the restore, want 1", MetricRestored, got)
	}
	h.armed(t)
	h.clk.Advance(h.cfg.Interval)
	if err := h.w.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(h.cfg.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the restored catalog was saved: %v", err)
	}

	// The writer may still be finishing the round above, which then sees
	// these changes, or be waiting out a new interval.
	h.store.Publish(sampleMembers()[:1])
	h.store.EndRestore()
	testnet.Eventually(t, wait, "the publisher's view is saved", func() error {
		h.clk.Advance(h.cfg.Interval)
		s, err := Read(h.cfg, h.clk.Now())
		if err == nil && len(s.Members) != 1 {
			err = errors.New("wrong member count")
		}
		return err
	})
	if got := metric(t, h.reg, MetricRestored); got != 0 {
		t.Fatalf("%s = %v after the restore, want 0", MetricRestored, got)
	}
}

// TestWriterCloseSaves: Close writes what changed since the last write,
// without waiting for the interval, and is idempotent.
func TestWriterCloseSaves(t *testing.T) {
	h := newWriterHarness(t)
	h.store.Publish(sampleMembers())
	if err := h.w.Close(); err != nil {
		t.Fatal(err)
	}
	h.saved(t, 3)
	if err := h.w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := h.writes(t); n != 1 {
		t.Fatalf("%v writes, want 1", n)
	}
}

// TestWriterLeavesIncompleteRecordsOut: a record gossip has not completed
// (no address yet) is left out rather than making the file unreadable.
func TestWriterLeavesIncompleteRecordsOut(t *testing.T) {
	h := newWriterHarness(t)
	h.store.Publish(append(sampleMembers(), catalog.Member{Status: catalog.StatusAlive, Record: catalog.Record{Node: "new"}}))
	if err := h.w.Flush(); err != nil {
		t.Fatal(err)
	}
	h.saved(t, 3)
}

// metric returns the value of the counter or gauge name in reg, the one
// with label result=ok when it has labels; -1 when absent.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
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
			if len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() != resultOK {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// TestMetricNamesAsDocumented: the metrics are registered under the names
// the constants give, and docs/restart.md lists each.
func TestMetricNamesAsDocumented(t *testing.T) {
	h := newWriterHarness(t)
	h.store.Publish(sampleMembers())
	if err := h.w.Flush(); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/restart.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{MetricWrites, MetricSize, MetricRestored} {
		if metric(t, h.reg, name) < 0 {
			t.Errorf("%s is not registered", name)
		}
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/restart.md does not list %s", name)
		}
	}
}
