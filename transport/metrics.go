package transport

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, as docs/wire.md lists them.
const (
	MetricRefused         = "meshwork_transport_refused_streams_total"
	MetricInbound         = "meshwork_transport_inbound_streams_total"
	MetricOutbound        = "meshwork_transport_outbound_connections_total"
	MetricAttemptFailures = "meshwork_transport_connect_attempt_failures_total"
	MetricActive          = "meshwork_transport_active_streams"
	MetricBytes           = "meshwork_transport_proxied_bytes_total"
	MetricPeerConns       = "meshwork_transport_peer_connections"
	MetricPeerDials       = "meshwork_transport_peer_dials_total"
	MetricConnectSeconds  = "meshwork_transport_connect_duration_seconds"
	MetricListeners       = "meshwork_transport_listeners"
	MetricListenErrors    = "meshwork_transport_listen_errors_total"
	MetricUDPBuffer       = "meshwork_transport_udp_buffer_bytes"
	MetricGSO             = "meshwork_transport_gso_enabled"
	MetricGRO             = "meshwork_transport_gro_enabled"
	MetricSkipped         = "meshwork_transport_skipped_instances_total"
)

type metrics struct {
	refused         *prometheus.CounterVec // reason
	inbound         prometheus.Counter
	outbound        *prometheus.CounterVec // result
	attemptFailures *prometheus.CounterVec // reason
	active          *prometheus.GaugeVec   // direction
	bytes           *prometheus.CounterVec // direction
	peerConns       *prometheus.GaugeVec   // direction
	peerDials       *prometheus.CounterVec // result
	connectSeconds  prometheus.Histogram
	listeners       *prometheus.GaugeVec   // kind
	listenErrors    *prometheus.CounterVec // kind
	udpBuffer       *prometheus.GaugeVec   // direction
	gso             prometheus.Gauge
	gro             prometheus.Gauge
	skipped         *prometheus.CounterVec // reason

	// Pre-resolved children for the hot path.
	activeIn, activeOut prometheus.Gauge
	bytesUp, bytesDown  prometheus.Counter
	outOK               prometheus.Counter
	skippedNoIdentity   prometheus.Counter
	skippedNotAllowed   prometheus.Counter
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
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRefused,
			Help: "Inbound streams refused, by reason (the status code sent).",
		}, []string{"reason"}),
		inbound: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricInbound,
			Help: "Inbound streams accepted and spliced to a local service.",
		}),
		outbound: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricOutbound,
			Help: "Outbound connections taken on a VIP or upstream listener, by result: ok, refused, failed, no_instance.",
		}, []string{"result"}),
		attemptFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricAttemptFailures,
			Help: "Failed connect attempts to one instance (each may be followed by a try on another), by reason.",
		}, []string{"reason"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricActive,
			Help: "Proxied connections open now, by direction: inbound or outbound.",
		}, []string{"direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricBytes,
			Help: "Bytes proxied by finished outbound connections, by direction: up (caller to service) or down.",
		}, []string{"direction"}),
		peerConns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricPeerConns,
			Help: "QUIC connections to peer agents open now, by direction: dialed or accepted.",
		}, []string{"direction"}),
		peerDials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricPeerDials,
			Help: "QUIC dials to peer agents, by result: ok or failed.",
		}, []string{"result"}),
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
		udpBuffer: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricUDPBuffer,
			Help: "UDP socket buffer the kernel granted the tunnel socket, by direction: receive or send.",
		}, []string{"direction"}),
		gso: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricGSO,
			Help: "1 when quic-go sends with UDP generic segmentation offload, as seen on the last connection.",
		}),
		gro: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricGRO,
			Help: "1 when the tunnel socket receives with UDP generic receive offload.",
		}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricSkipped,
			Help: "Instances an outbound connection was not sent to because they may not serve the service, by reason: " +
				skipNoIdentity + " (their agent's certificate lacks the service's identity) or " +
				skipNodeNotAllowed + " (ServiceIdentity policy does not let their node hold it).",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{
		m.refused, m.inbound, m.outbound, m.attemptFailures, m.active, m.bytes,
		m.peerConns, m.peerDials, m.connectSeconds, m.listeners, m.listenErrors,
		m.udpBuffer, m.gso, m.gro, m.skipped,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.activeIn = m.active.WithLabelValues("inbound")
	m.activeOut = m.active.WithLabelValues("outbound")
	m.bytesUp = m.bytes.WithLabelValues("up")
	m.bytesDown = m.bytes.WithLabelValues("down")
	m.outOK = m.outbound.WithLabelValues("ok")
	m.skippedNoIdentity = m.skipped.WithLabelValues(skipNoIdentity)
	m.skippedNotAllowed = m.skipped.WithLabelValues(skipNodeNotAllowed)
	return m, nil
}
