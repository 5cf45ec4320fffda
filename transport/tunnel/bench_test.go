package tunnel

import "testing"

// BenchmarkPeerHolds measures the look a caller takes, on each connect
// attempt, at the service identities a peer's certificate held when the
// connection came up (transport's BenchmarkIdentityCheck measures the
// policy half). No handshake, no lock.
func BenchmarkPeerHolds(b *testing.B) {
	pc := &peerConn{services: []string{"api", "db", "web"}}
	b.ReportAllocs()
	for b.Loop() {
		if !pc.holds("web") {
			b.Fatal("the certificate does not hold web")
		}
	}
}
