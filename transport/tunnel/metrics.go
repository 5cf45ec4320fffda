package tunnel

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, as docs/wire.md lists them. They keep the
// meshwork_transport_ prefix of the data plane they belong to.
const (
	MetricRefused   = "meshwork_transport_refused_streams_total"
	MetricPeerConns = "meshwork_transport_peer_connections"
	MetricPeerDials = "meshwork_transport_peer_dials_total"
	MetricUDPBuffer = "meshwork_transport_udp_buffer_bytes"
	MetricGSO       = "meshwork_transport_gso_enabled"
	MetricGRO       = "meshwork_transport_gro_enabled"

	MetricNoCredit       = "meshwork_transport_stream_credit_exhausted_total"
	MetricStreamLimit    = "meshwork_transport_peer_stream_limit"
	MetricPeerStreamsMax = "meshwork_transport_peer_streams_max"
)

// MetricNames lists the names of the metrics a Tunnel registers.
var MetricNames = []string{MetricRefused, MetricPeerConns, MetricPeerDials, MetricUDPBuffer, MetricGSO, MetricGRO,
	MetricNoCredit, MetricStreamLimit, MetricPeerStreamsMax}

type metrics struct {
	refused   *prometheus.CounterVec // reason
	peerConns *prometheus.GaugeVec   // direction
	peerDials *prometheus.CounterVec // result
	udpBuffer *prometheus.GaugeVec   // direction
	gso       prometheus.Gauge
	gro       prometheus.Gauge
	noCredit  prometheus.Counter
}

// newMetrics registers the tunnel's metrics: limit is the streams one
// peer may hold here, and peerMax reports the most that one peer holds now.
func newMetrics(reg prometheus.Registerer, limit int, peerMax func() float64) (*metrics, error) {
	m := &metrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRefused,
			Help: "Inbound streams refused, by reason (the status code sent).",
		}, []string{"reason"}),
		peerConns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricPeerConns,
			Help: "QUIC connections to peer agents open now, by direction: dialed or accepted.",
		}, []string{"direction"}),
		peerDials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricPeerDials,
			Help: "QUIC dials to peer agents, by result: ok or failed.",
		}, []string{"result"}),
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
		noCredit: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricNoCredit,
			Help: "Streams this agent could not open because the peer granted no more: the peer's tunnel.max_streams_per_peer is reached.",
		}),
	}
	streamLimit := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: MetricStreamLimit,
		Help: "Inbound streams one peer agent may hold here (tunnel.max_streams_per_peer).",
	})
	streamLimit.Set(float64(limit))
	streamsMax := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: MetricPeerStreamsMax,
		Help: "The most inbound streams that one peer agent holds here now, to compare with the limit.",
	}, peerMax)
	for _, c := range []prometheus.Collector{m.refused, m.peerConns, m.peerDials, m.udpBuffer, m.gso, m.gro, m.noCredit, streamLimit, streamsMax} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
