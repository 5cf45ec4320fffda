package tracing

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, as docs/observability-tracing.md lists them.
const (
	MetricExported     = "meshwork_tracing_spans_exported_total"
	MetricDropped      = "meshwork_tracing_spans_dropped_total"
	MetricExportErrors = "meshwork_tracing_export_errors_total"
	MetricQueued       = "meshwork_tracing_queued_spans"
)

// MetricNames lists every metric the exporter registers.
var MetricNames = []string{MetricExported, MetricDropped, MetricExportErrors, MetricQueued}

// The reasons a sampled span is dropped, the values of MetricDropped's
// reason label.
const (
	// DropQueueFull: the queue was full when the call ended, because the
	// receiver is slower than the traffic or unreachable.
	DropQueueFull = "queue_full"
	// DropExportFailed: the receiver refused the batch, or did not answer
	// within the retries.
	DropExportFailed = "export_failed"
	// DropClosed: the exporter was closing, or its Close deadline passed
	// before the span was sent.
	DropClosed = "closed"
)

type metrics struct {
	exported     prometheus.Counter
	dropped      *prometheus.CounterVec // reason
	exportErrors prometheus.Counter

	// Pre-resolved children: queueFull is counted on the data path.
	queueFull    prometheus.Counter
	exportFailed prometheus.Counter
	closed       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, queued func() float64) (*metrics, error) {
	m := &metrics{
		exported: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricExported,
			Help: "Spans the OTLP receiver accepted.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricDropped,
			Help: "Sampled spans never delivered, by reason: " + DropQueueFull + " (the queue was full when the call ended), " +
				DropExportFailed + " (the receiver refused or did not answer) or " + DropClosed + " (the exporter was closing).",
		}, []string{"reason"}),
		exportErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricExportErrors,
			Help: "Export requests that failed after their retries; their spans are counted as dropped.",
		}),
	}
	queuedGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: MetricQueued,
		Help: "Spans waiting in the queue for export now.",
	}, queued)
	for _, c := range []prometheus.Collector{m.exported, m.dropped, m.exportErrors, queuedGauge} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.queueFull = m.dropped.WithLabelValues(DropQueueFull)
	m.exportFailed = m.dropped.WithLabelValues(DropExportFailed)
	m.closed = m.dropped.WithLabelValues(DropClosed)
	return m, nil
}
