package transport

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/transport/breaker"
	"github.com/meshwork/meshwork/transport/l4"
	"github.com/meshwork/meshwork/transport/tunnel"
)

// Metric names, as docs/wire.md lists them. The tunnel and the handlers
// register theirs under the same meshwork_transport_ prefix; their names
// are repeated here so that the data plane's metrics are listed in one
// place.
const (
	MetricRefused         = tunnel.MetricRefused
	MetricInbound         = l4.MetricInbound
	MetricOutbound        = "meshwork_transport_outbound_connections_total"
	MetricAttemptFailures = "meshwork_transport_connect_attempt_failures_total"
	MetricActive          = l4.MetricActive
	MetricBytes           = l4.MetricBytes
	MetricPeerConns       = tunnel.MetricPeerConns
	MetricPeerDials       = tunnel.MetricPeerDials
	MetricConnectSeconds  = "meshwork_transport_connect_duration_seconds"
	MetricListeners       = "meshwork_transport_listeners"
	MetricListenErrors    = "meshwork_transport_listen_errors_total"
	MetricUDPBuffer       = tunnel.MetricUDPBuffer
	MetricGSO             = tunnel.MetricGSO
	MetricGRO             = tunnel.MetricGRO
	MetricSkipped         = "meshwork_transport_skipped_instances_total"
	MetricNoCredit        = tunnel.MetricNoCredit
	MetricStreamLimit     = tunnel.MetricStreamLimit
	MetricPeerStreamsMax  = tunnel.MetricPeerStreamsMax
	MetricFaults          = l4.MetricFaults
	MetricEjections       = "meshwork_transport_outlier_ejections_total"
	MetricEjected         = "meshwork_transport_outliers_ejected"
	MetricCircuitRejected = breaker.MetricRejections
)

// metricNames lists the names of the metrics transport itself registers;
// tunnel.MetricNames, l4.MetricNames and breaker.MetricNames list the
// others.
var metricNames = []string{MetricOutbound, MetricAttemptFailures, MetricConnectSeconds, MetricListeners, MetricListenErrors, MetricSkipped,
	MetricEjections, MetricEjected}

type metrics struct {
	outbound        *prometheus.CounterVec // result
	attemptFailures *prometheus.CounterVec // reason
	connectSeconds  prometheus.Histogram
	listeners       *prometheus.GaugeVec   // kind
	listenErrors    *prometheus.CounterVec // kind
	skipped         *prometheus.CounterVec // reason
	ejections       *prometheus.CounterVec // service
	ejected         *prometheus.GaugeVec   // service

	// Pre-resolved children for the hot path.
	outOK             prometheus.Counter
	skippedNoIdentity prometheus.Counter
	skippedNotAllowed prometheus.Counter
}

// skippedBy returns the skip counter of reason.
func (m *metrics) skippedBy(reason string) prometheus.Counter {
	if reason == skipNodeNotAllowed {
		return m.skippedNotAllowed
	}
	return m.skippedNoIdentity
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		outbound: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricOutbound,
			Help: "Outbound connections taken on a VIP or upstream listener, by result: ok, refused, failed, no_instance, circuit_open.",
		}, []string{"result"}),
		attemptFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricAttemptFailures,
			Help: "Failed connect attempts to one instance (each may be followed by a try on another), by reason.",
		}, []string{"reason"}),
		connectSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricConnectSeconds,
			Help:    "Time from accepting a connection to the receiver's accepted status, over all attempts.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		listeners: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricListeners,
			Help: "TCP listeners open now, by kind: vip or upstream.",
		}, []string{"kind"}),
		listenErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricListenErrors,
			Help: "Listeners that failed to bind, by kind: vip or upstream.",
		}, []string{"kind"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricSkipped,
			Help: "Instances an outbound connection was not sent to because they may not serve the service, by reason: " +
				skipNoIdentity + " (their agent's certificate lacks the service's identity) or " +
				skipNodeNotAllowed + " (ServiceIdentity policy does not let their node hold it).",
		}, []string{"reason"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricEjections,
			Help: "Instances ejected by outlier detection (Resilience outlier_detection), by service.",
		}, []string{"service"}),
		ejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricEjected,
			Help: "Instances ejected now by outlier detection, by service.",
		}, []string{"service"}),
	}
	for _, c := range []prometheus.Collector{
		m.outbound, m.attemptFailures, m.connectSeconds, m.listeners, m.listenErrors, m.skipped, m.ejections, m.ejected,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.outOK = m.outbound.WithLabelValues("ok")
	m.skippedNoIdentity = m.skipped.WithLabelValues(skipNoIdentity)
	m.skippedNotAllowed = m.skipped.WithLabelValues(skipNodeNotAllowed)
	return m, nil
}
