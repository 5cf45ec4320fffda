package l4

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, as docs/wire.md lists them. They keep the
// meshwork_transport_ prefix of the data plane they belong to.
const (
	MetricInbound = "meshwork_transport_inbound_streams_total"
	MetricActive  = "meshwork_transport_active_streams"
	MetricBytes   = "meshwork_transport_proxied_bytes_total"
	MetricFaults  = "meshwork_transport_faults_injected_total"
)

// MetricNames lists the names of the metrics a Proxy registers.
var MetricNames = []string{MetricInbound, MetricActive, MetricBytes, MetricFaults}

type metrics struct {
	inbound prometheus.Counter
	active  *prometheus.GaugeVec   // direction
	bytes   *prometheus.CounterVec // direction
	faults  *prometheus.CounterVec // kind, service

	// Pre-resolved children for the hot path.
	activeIn, activeOut prometheus.Gauge
	bytesUp, bytesDown  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		inbound: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricInbound,
			Help: "Inbound streams accepted and spliced to a local service.",
		}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricActive,
			Help: "Proxied connections open now, by direction: inbound or outbound.",
		}, []string{"direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricBytes,
			Help: "Bytes proxied by finished outbound connections, by direction: up (caller to service) or down.",
		}, []string{"direction"}),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricFaults,
			Help: "Faults injected into inbound connections by Fault policies, by kind (abort, delay) and destination service.",
		}, []string{"kind", "service"}),
	}
	for _, c := range []prometheus.Collector{m.inbound, m.active, m.bytes, m.faults} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.activeIn = m.active.WithLabelValues("inbound")
	m.activeOut = m.active.WithLabelValues("outbound")
	m.bytesUp = m.bytes.WithLabelValues("up")
	m.bytesDown = m.bytes.WithLabelValues("down")
	return m, nil
}
