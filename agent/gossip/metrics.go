package gossip

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, as documented in docs and checked by TestMetricNames.
const (
	metricMembers          = "meshwork_gossip_members"
	metricBroadcastsQueued = "meshwork_gossip_broadcasts_queued"
	metricReceived         = "meshwork_gossip_messages_received_total"
	metricRefused          = "meshwork_gossip_messages_refused_total"
	metricPushPull         = "meshwork_gossip_push_pull_total"
	metricStreamsSent      = "meshwork_gossip_stream_messages_sent_total"
	metricSentBytes        = "meshwork_gossip_sent_bytes_total"
	metricReceivedBytes    = "meshwork_gossip_received_bytes_total"
	metricKeyringOps       = "meshwork_gossip_keyring_operations_total"
	metricDownEvidence     = "meshwork_gossip_down_notices_total"
	metricJoinAttempts     = "meshwork_gossip_join_attempts_total"
	metricInContact        = "meshwork_gossip_in_contact"
	metricPeersFile        = "meshwork_gossip_peers_file_operations_total"
)

// Reasons a message is refused, the values of the "reason" label.
const (
	refusedDecode  = "decode"  // not a message of ours, or malformed
	refusedInvalid = "invalid" // decoded, but a record failed validation
	refusedDecrypt = "decrypt" // memberlist could not decrypt it (key mismatch)
	refusedSelf    = "self"    // a record about this node from elsewhere
)

type metrics struct {
	members    *prometheus.GaugeVec
	received   *prometheus.CounterVec
	refused    *prometheus.CounterVec
	pushPull   *prometheus.CounterVec
	streams    *prometheus.CounterVec
	keyringOps *prometheus.CounterVec
	down       prometheus.Counter
	joins      *prometheus.CounterVec
	inContact  prometheus.Gauge
	peersFile  *prometheus.CounterVec
}

// newMetrics registers the package's metrics in reg. queued and stats are
// read at scrape time.
func newMetrics(reg prometheus.Registerer, queued func() int, stats func() Stats) (*metrics, error) {
	m := &metrics{
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricMembers,
			Help: "Members known to this node, by status (alive, suspect, failed, left); this node included.",
		}, []string{"status"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricReceived,
			Help: "Gossip messages of the catalog layer received, by type.",
		}, []string{"type"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricRefused,
			Help: "Gossip messages refused, by reason (decode, invalid, decrypt, self).",
		}, []string{"reason"}),
		pushPull: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPushPull,
			Help: "Full state exchanges, by direction (sent: our state; merged: a peer's state).",
		}, []string{"direction"}),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricStreamsSent,
			Help: "Messages sent over streams (TCP), by type; failures included in result=error.",
		}, []string{"type", "result"}),
		keyringOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricKeyringOps,
			Help: "Keyring operations applied on this node, by operation and result.",
		}, []string{"op", "result"}),
		down: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricDownEvidence,
			Help: "Down notices raised by this node: a failed probe whose TCP connection was refused.",
		}),
		joins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricJoinAttempts,
			Help: "Addresses this node tried to join on its own, by loop (rejoin: out of contact; reconnect: one gone member) and result.",
		}, []string{"loop", "result"}),
		inContact: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricInContact,
			Help: "1 when this node is in contact with the cluster (a live peer, and a live server when it knows servers), else 0.",
		}),
		peersFile: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPeersFile,
			Help: "Reads and writes of the peers file, by op (read, write) and result (ok, error).",
		}, []string{"op", "result"}),
	}
	for _, s := range []string{"alive", "suspect", "failed", "left"} {
		m.members.WithLabelValues(s)
	}
	for _, r := range []string{refusedDecode, refusedInvalid, refusedDecrypt, refusedSelf} {
		m.refused.WithLabelValues(r)
	}
	cs := []prometheus.Collector{
		m.members, m.received, m.refused, m.pushPull, m.streams, m.keyringOps, m.down,
		m.joins, m.inContact, m.peersFile,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: metricBroadcastsQueued,
			Help: "Broadcasts waiting in this node's gossip queue.",
		}, func() float64 { return float64(queued()) }),
		newBytesCollector(stats),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// bytesCollector exposes the transport counters, labelled by proto
// (packet: UDP; stream: TCP).
type bytesCollector struct {
	stats      func() Stats
	sent, recv *prometheus.Desc
}

func newBytesCollector(stats func() Stats) *bytesCollector {
	return &bytesCollector{
		stats: stats,
		sent: prometheus.NewDesc(metricSentBytes,
			"Gossip bytes sent at the transport (after encryption, without IP/UDP/TCP headers), by proto.",
			[]string{"proto"}, nil),
		recv: prometheus.NewDesc(metricReceivedBytes,
			"Gossip bytes received at the transport, by proto.",
			[]string{"proto"}, nil),
	}
}

func (b *bytesCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- b.sent
	ch <- b.recv
}

func (b *bytesCollector) Collect(ch chan<- prometheus.Metric) {
	s := b.stats()
	ch <- prometheus.MustNewConstMetric(b.sent, prometheus.CounterValue, float64(s.PacketBytesSent), "packet")
	ch <- prometheus.MustNewConstMetric(b.sent, prometheus.CounterValue, float64(s.StreamBytesSent), "stream")
	ch <- prometheus.MustNewConstMetric(b.recv, prometheus.CounterValue, float64(s.PacketBytesReceived), "packet")
	ch <- prometheus.MustNewConstMetric(b.recv, prometheus.CounterValue, float64(s.StreamBytesReceived), "stream")
}
