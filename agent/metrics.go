package agent

import "github.com/prometheus/client_golang/prometheus"

// Metric names of the agent's own adapters, as docs/tunnels.md lists
// them. The components register their own.
const (
	// MetricTunnelRefusedCerts counts peer certificates refused in tunnel
	// handshakes, on either side.
	MetricTunnelRefusedCerts = "meshwork_tunnel_peer_certificates_refused_total"
)

type tunnelMetrics struct {
	refusedCerts prometheus.Counter
}

func newTunnelMetrics(reg prometheus.Registerer) (*tunnelMetrics, error) {
	m := &tunnelMetrics{
		refusedCerts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricTunnelRefusedCerts,
			Help: "Peer certificates refused in tunnel handshakes (another CA, another trust domain, expired), on either side.",
		}),
	}
	if err := reg.Register(m.refusedCerts); err != nil {
		return nil, err
	}
	return m, nil
}
