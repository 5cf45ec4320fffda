package transport

import "fmt"

// maxStreamsPerPeer bounds MaxStreamsPerPeer: more would let one peer hold
// more streams than an agent carries in all.
const maxStreamsPerPeer = 1 << 20

// CheckMaxStreamsPerPeer checks the cap on one peer's concurrent streams.
// Validate applies it, and agent/config to tunnel.max_streams_per_peer;
// its error names no field. (The range, tunnel.vip_range, is vip's:
// vip.CheckPrefix.)
func CheckMaxStreamsPerPeer(n int) error {
	if n < 1 || n > maxStreamsPerPeer {
		return fmt.Errorf("%d must be between 1 and %d", n, maxStreamsPerPeer)
	}
	return nil
}
