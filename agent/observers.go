package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/meshwork/meshwork/telemetry/accesslog"
	"github.com/meshwork/meshwork/telemetry/signals"
	"github.com/meshwork/meshwork/telemetry/tracing"
	"github.com/meshwork/meshwork/transport/observe"
)

// tracingCloseTimeout bounds the export of the spans still queued when the
// agent stops.
const tracingCloseTimeout = 5 * time.Second

// buildObservers makes what the data plane reports its calls to, as the
// telemetry section says (docs/observability.md): the golden signals, the
// access log and the trace exporter. They are added as components before
// the tunnel, so that they close after it: the last calls are still
// counted, logged and exported.
func (a *Agent) buildObservers() (observe.Observer, error) {
	tm := a.cfg.Telemetry
	var obs observe.Observers
	if tm.ServiceMetrics == nil || *tm.ServiceMetrics {
		sig, err := signals.New(a.reg)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		obs = append(obs, sig)
	}
	if tm.AccessLog.Path != "" {
		cfg := accesslog.Config{Path: tm.AccessLog.Path, SampleRate: 1, RateLimit: tm.AccessLog.RateLimit}
		if r := tm.AccessLog.SampleRate; r != nil {
			cfg.SampleRate = *r
		}
		l, err := accesslog.New(cfg, a.reg, a.logger("accesslog"))
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		a.accessLog = l
		a.add("accesslog", func(context.Context) error { return nil }, l.Close)
		obs = append(obs, l)
	}
	if tm.Tracing.OTLPEndpoint != "" {
		e, err := tracing.New(tracing.Config{Endpoint: tm.Tracing.OTLPEndpoint, QueueSize: tm.Tracing.QueueSize,
			Node: a.cfg.Node, Version: a.deps.Version}, a.reg, a.logger("tracing"))
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		a.add("tracing", e.Start, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), tracingCloseTimeout)
			defer cancel()
			return e.Close(ctx)
		})
		obs = append(obs, e)
	}
	if len(obs) == 0 {
		return nil, nil
	}
	return obs, nil
}
