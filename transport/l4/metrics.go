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
	MetricHeld    = "meshwork_transport_connections_held_total"
	MetricResumed = "meshwork_transport_connections_resumed_total"
	MetricParked  = "meshwork_transport_connections_parked"
)

// MetricNames lists the names of the metrics a Proxy registers.
var MetricNames = []string{MetricInbound, MetricActive, MetricBytes, MetricFaults, MetricHeld, MetricResumed, MetricParked}

type metrics struct {
	inbound prometheus.Counter
	active  *prometheus.GaugeVec   // direction
	bytes   *prometheus.CounterVec // direction
	faults  *prometheus.CounterVec // kind, service
	held    *prometheus.CounterVec // result
	resumed *prometheus.CounterVec // result
	parked  prometheus.Gauge

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
		held: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricHeld,
			Help: "Connections this agent tried to hold for its successor as it stopped, by result: held, refused (the peer carries on), not_holdable (a direction had ended), failed (cut).",
		}, []string{"result"}),
		resumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricResumed,
			Help: "Held connections carried on after a restart, on both agents, by result: resumed, expired (the successor never came; reset), failed (the successor could not resume; reset).",
		}, []string{"result"}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricParked,
			Help: "Connections held now for a peer agent's successor.",
		}),
	}
	for _, c := range []prometheus.Collector{m.inbound, m.active, m.bytes, m.faults, m.held, m.resumed, m.parked} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Every result shows from the start, at 0, so that a rate over it is
	// defined before the first restart.
	for _, r := range []string{"held", "refused", "not_holdable", "failed"} {
		m.held.WithLabelValues(r)
	}
	for _, r := range []string{"resumed", "expired", "failed"} {
		m.resumed.WithLabelValues(r)
	}
	m.activeIn = m.active.WithLabelValues("inbound")
	m.activeOut = m.active.WithLabelValues("outbound")
	m.bytesUp = m.bytes.WithLabelValues("up")
	m.bytesDown = m.bytes.WithLabelValues("down")
	return m, nil
}
