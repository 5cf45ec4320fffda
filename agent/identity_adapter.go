package agent

import (
	"crypto/x509"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/ca"
)

// countingIdentity is the certificate manager as the data plane's identity,
// with every refused peer certificate logged and counted. A peer whose
// certificate does not verify (another CA, another trust domain, expired)
// fails its TLS handshake before the transport sees a connection, so this
// is the only place such a refusal is visible. The log is limited to one
// line per second; the counter counts them all.
type countingIdentity struct {
	*ca.Manager
	refused prometheus.Counter
	log     *slog.Logger
	lastLog atomic.Int64 // unix nanoseconds of the last log line
}

func newCountingIdentity(m *ca.Manager, refused prometheus.Counter, log *slog.Logger) *countingIdentity {
	return &countingIdentity{Manager: m, refused: refused, log: log}
}

// VerifyPeer implements transport.Identity.
func (c *countingIdentity) VerifyPeer(rawCerts [][]byte) ([]string, error) {
	ids, err := c.Manager.VerifyPeer(rawCerts)
	if err == nil {
		return ids, nil
	}
	c.refused.Inc()
	now := time.Now().UnixNano()
	if last := c.lastLog.Load(); now-last >= int64(time.Second) && c.lastLog.CompareAndSwap(last, now) {
		c.log.Warn("tunnel peer certificate refused", "claims", claimedIDs(rawCerts), "err", err)
	}
	return nil, err
}

// claimedIDs returns the URI SANs a refused leaf claims, for the log.
func claimedIDs(rawCerts [][]byte) []string {
	if len(rawCerts) == 0 {
		return nil
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return []string{"(unparsable certificate)"}
	}
	out := make([]string, 0, len(leaf.URIs))
	for _, u := range leaf.URIs {
		out = append(out, u.String())
	}
	return out
}
