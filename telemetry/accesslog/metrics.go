package accesslog

import "github.com/prometheus/client_golang/prometheus"

// Metric names, as documented in docs/observability-accesslog.md.
const (
	MetricLines      = "meshwork_accesslog_lines_total"
	MetricDropped    = "meshwork_accesslog_dropped_total"
	MetricSampledOut = "meshwork_accesslog_sampled_out_total"
)

// MetricNames lists every metric the access log registers.
var MetricNames = []string{MetricLines, MetricDropped, MetricSampledOut}

// The reasons of MetricDropped.
const (
	reasonRateLimit  = "rate_limit"
	reasonQueueFull  = "queue_full"
	reasonWriteError = "write_error"
)

type metrics struct {
	lines      prometheus.Counter
	sampledOut prometheus.Counter
	// Each reason is resolved once, so that counting a drop on the data
	// path is one atomic add.
	rateLimited, queueFull, writeErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricDropped,
		Help: "Access log lines not written: over telemetry.access_log.rate_limit (rate_limit), the writer's queue full (queue_full), or the destination failed (write_error).",
	}, []string{"reason"})
	m := &metrics{
		lines: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricLines,
			Help: "Access log lines written to the destination.",
		}),
		sampledOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricSampledOut,
			Help: "Calls not logged because telemetry.access_log.sample_rate left them out.",
		}),
		rateLimited: dropped.WithLabelValues(reasonRateLimit),
		queueFull:   dropped.WithLabelValues(reasonQueueFull),
		writeErrors: dropped.WithLabelValues(reasonWriteError),
	}
	for _, c := range []prometheus.Collector{m.lines, dropped, m.sampledOut} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
