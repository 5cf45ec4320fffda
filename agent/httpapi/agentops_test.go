package httpapi

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/agent/local"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/logstream"
	"github.com/prometheus/client_golang/prometheus"
)

// monitorServer is the API with a log to follow, and that log's logger.
func monitorServer(t *testing.T) (*api.Client, *slog.Logger, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	store := catalog.NewStore()
	lm, err := local.New(local.Config{Node: "n1", NodeInfo: local.NodeInfo{Addr: "127.0.0.1"}},
		local.Deps{Publisher: local.PublisherFunc(func(catalog.Record) {}), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	h, broker := logstream.New(slog.DiscardHandler)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{}, Deps{Listener: l, Local: lm, Catalog: store, Gatherer: reg, Registerer: reg, Logs: broker})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return api.NewClient(l.Addr().String()), slog.New(h), reg
}

// TestMonitorSlowReader opens a monitor and does not read it while the
// agent logs far more than the stream holds: logging goes on at full
// speed, and the reader, once it reads, is told how many lines it lost.
func TestMonitorSlowReader(t *testing.T) {
	c, log, reg := monitorServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	body, err := c.Monitor(ctx, "debug")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	r := bufio.NewReader(body)

	log.Info("first line")
	if l, err := r.ReadString('\n'); err != nil || !strings.Contains(l, `msg="first line"`) {
		t.Fatalf("first line = %q, %v", l, err)
	}
	// Not reading: the handler fills the socket buffers, then its own.
	const burst = 60_000 // 60 MB: more than the socket buffers of loopback hold
	payload := strings.Repeat("x", 1000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range burst {
			log.Debug("burst", "i", i, "payload", payload)
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("logging blocked on a monitor that does not read")
	}
	// The stream's buffer is full of the burst: a line logged now may be
	// dropped too. Log one more for every line read, until one comes
	// through.
	var dropped, after bool
	for !after {
		log.Warn("after the burst")
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		dropped = dropped || (strings.HasPrefix(l, "[monitor] ") && strings.Contains(l, "log lines dropped"))
		after = strings.Contains(l, "after the burst")
	}
	if !dropped {
		t.Fatal("the stream did not say that lines were dropped")
	}
	if got := counterValue(t, reg, MetricMonitorDropped); got == 0 {
		t.Fatalf("%s = 0 after drops", MetricMonitorDropped)
	}
}

func TestMonitorBadLevel(t *testing.T) {
	c, _, _ := monitorServer(t)
	_, err := c.Monitor(context.Background(), "loud")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(ae.Message, `"loud"`) {
		t.Fatalf("monitor at level loud: %v, want 400 naming it", err)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
